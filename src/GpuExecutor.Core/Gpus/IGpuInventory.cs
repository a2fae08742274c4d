namespace GpuExecutor.Gpus;

/// <summary>What the host's GPU driver says: the GPUs and how they connect. nvidia-smi is the one implementation.</summary>
public interface IGpuInventory
{
    Task<IReadOnlyList<GpuDevice>> QueryAsync(CancellationToken cancellationToken);

    /// <summary>The link matrix, or <see cref="GpuTopology.Unknown"/>; cached in <paramref name="cacheDirectory"/> where given.</summary>
    Task<GpuTopology> TopologyAsync(IReadOnlyList<GpuDevice> inventory, string? cacheDirectory, Action<string> log, CancellationToken cancellationToken);

    /// <summary>One sample of each of the given GPUs, from one call; GPUs not asked for are left out whatever the driver answers.</summary>
    Task<IReadOnlyList<Telemetry.GpuSample>> SampleAsync(IReadOnlyList<string> uuids, CancellationToken cancellationToken);
}
