namespace GpuExecutor.Checkpoints;

/// <summary>
/// Starts a job's checkpoint agent as a process that outlives prepare, every later stage and the
/// runner. The binary does it (it knows its own path and config); tests use a fake.
/// </summary>
public interface ICheckpointAgentLauncher
{
    /// <summary>Starts the agent for <paramref name="container"/>; returns the path of its log.</summary>
    string Start(long jobId, string runKey, string container);
}
