using GpuExecutor.Checkpoints;

namespace GpuExecutor.Tests.Fakes;

/// <summary>Records the agents a workflow would start, instead of starting processes.</summary>
public sealed class FakeAgentLauncher : ICheckpointAgentLauncher
{
    public List<(long JobId, string RunKey, string Container)> Started { get; } = [];

    public string Start(long jobId, string runKey, string container)
    {
        Started.Add((jobId, runKey, container));
        return $"/fake/agent-{jobId}.log";
    }
}
