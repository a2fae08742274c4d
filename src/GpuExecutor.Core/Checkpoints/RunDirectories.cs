using System.Globalization;

namespace GpuExecutor.Checkpoints;

/// <summary>
/// The host directories of one run, under STATE_DIR/checkpoints/RUN-KEY. Only "work" is mounted
/// into the job's container; the rest is the executor's and the agent's own.
/// </summary>
public sealed record RunDirectories(string Root)
{
    public static RunDirectories For(string stateDir, string runKey) => new(Path.Combine(stateDir, "checkpoints", runKey));

    /// <summary>Mounted read-write at the checkpoint directory inside the container.</summary>
    public string Work => Path.Combine(Root, "work");

    /// <summary>The agent's frozen copies, which it uploads from.</summary>
    public string Snapshots => Path.Combine(Root, "snapshots");

    /// <summary>Where a restore assembles the generation before it becomes "work".</summary>
    public string RestoreStaging => Path.Combine(Root, "restore");

    public string Trash => Path.Combine(Root, "trash");

    /// <summary>Held (flock) by the run's agent for as long as it lives, so the next job's prepare can wait for its final commit.</summary>
    public string AgentLock => Path.Combine(Root, "agent.lock");

    /// <summary>Held by `run` while it follows the run's main stage: free with the stage still running means no runner follows it.</summary>
    public string MainStageLock => Path.Combine(Root, "main-stage.lock");

    /// <summary>What the agent last committed from "work", file by file as it found them there (<see cref="LocalCommit"/>).</summary>
    public string LocalCommitRecord => Path.Combine(Root, "committed.json");

    public string AgentStatus(long jobId) => Path.Combine(Root, $"agent-{jobId.ToString(CultureInfo.InvariantCulture)}.json");

    /// <summary>The jobs whose agents left a status here (<see cref="AgentStatus"/>).</summary>
    public IEnumerable<long> AgentJobIds() =>
        Directory.EnumerateFiles(Root, "agent-*.json")
            .Select(path => Path.GetFileNameWithoutExtension(path)["agent-".Length..])
            .Select(text => long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var jobId) ? jobId : (long?)null)
            .OfType<long>();

    /// <summary>Created by `run` when the main step has ended: the agent's cue for its final commit.</summary>
    public string FinalPassRequest(long jobId) => Path.Combine(Root, $"final-{jobId.ToString(CultureInfo.InvariantCulture)}.request");

    /// <summary>
    /// Created by `run` before it SIGKILLs the stage's processes: whatever the trainer changed
    /// since its last complete checkpoint may be torn, and only a completion marker made before
    /// the kill may still be committed.
    /// </summary>
    public string WriterKilledNotice(long jobId) => Path.Combine(Root, $"killed-{jobId.ToString(CultureInfo.InvariantCulture)}.notice");
}
