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

    /// <summary>What each sample call answers, in turn (the last one repeats), as nvidia-smi's csv lines.</summary>
    public List<string> SampleAnswers { get; } = [];

    /// <summary>Sample calls so far; a field, read with Volatile.Read by a test polling another thread's sampler.</summary>
    public int SampleCallCount;

    public Task<IReadOnlyList<Telemetry.GpuSample>> SampleAsync(IReadOnlyList<string> uuids, CancellationToken cancellationToken)
    {
        var calls = Interlocked.Increment(ref SampleCallCount) - 1;
        var answer = SampleAnswers.Count == 0 ? "" : SampleAnswers[Math.Min(calls, SampleAnswers.Count - 1)];
        return Task.FromResult(NvidiaSmi.ParseSamples(answer, uuids, DateTimeOffset.UtcNow));
    }
}
