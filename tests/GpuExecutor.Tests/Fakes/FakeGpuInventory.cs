using GpuExecutor.Gpus;

namespace GpuExecutor.Tests.Fakes;

/// <summary>nvidia-smi's answers from recorded fixtures, without nvidia-smi.</summary>
public sealed class FakeGpuInventory(string queryFixture, string? topologyFixture = null) : IGpuInventory
{
    public int Queries { get; private set; }

    public Task<IReadOnlyList<GpuDevice>> QueryAsync(CancellationToken cancellationToken)
    {
        Queries++;
        return Task.FromResult(NvidiaSmiQuery.Parse(GpuInventoryTests.Fixture(queryFixture)));
    }

    public Task<GpuTopology> TopologyAsync(IReadOnlyList<GpuDevice> inventory, string? cacheDirectory, Action<string> log, CancellationToken cancellationToken) =>
        Task.FromResult(topologyFixture is null ? GpuTopology.Unknown : GpuTopology.Parse(GpuInventoryTests.Fixture(topologyFixture)));
}
