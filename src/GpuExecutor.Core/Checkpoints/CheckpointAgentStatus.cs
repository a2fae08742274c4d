using System.Text.Json.Serialization;

namespace GpuExecutor.Checkpoints;

/// <summary>What the agent last did, for the job log (written by the agent, read by `run`).</summary>
public sealed record CheckpointAgentStatus(
    [property: JsonPropertyName("job_id")] long JobId,
    [property: JsonPropertyName("committed_generation")] long? CommittedGeneration,
    [property: JsonPropertyName("committed_at")] DateTimeOffset? CommittedAt,
    [property: JsonPropertyName("uploaded_bytes")] long UploadedBytes,
    [property: JsonPropertyName("total_bytes")] long TotalBytes,
    [property: JsonPropertyName("failing_since")] DateTimeOffset? FailingSince,
    [property: JsonPropertyName("last_error")] string? LastError,
    [property: JsonPropertyName("final_pass_done")] long FinalPassDone,
    [property: JsonPropertyName("exited")] bool Exited)
{
    /// <summary>How many files the committed generation holds.</summary>
    [JsonPropertyName("committed_files")]
    public int CommittedFiles { get; init; }

    /// <summary>The agent's process, so gc can stop one that outlived its job.</summary>
    [JsonPropertyName("pid")]
    public int Pid { get; init; }

    /// <summary>When this job's first agent started: the run's work is safe up to here (restore put the newest generation in place).</summary>
    [JsonPropertyName("started_at")]
    public DateTimeOffset? StartedAt { get; init; }

    /// <summary>The job's deadline, from its container's labels, once the agent has read them.</summary>
    [JsonPropertyName("deadline")]
    public DateTimeOffset? Deadline { get; init; }

    /// <summary>The same deadline on the host's boot clock (a <see cref="GpuExecutor.Clocks.BootInstant"/>), which a wall-clock jump does not move.</summary>
    [JsonPropertyName("deadline_boot")]
    public string? DeadlineOnBootClock { get; init; }

    /// <summary>The deadline in the wall clock's present terms.</summary>
    [JsonIgnore]
    public DateTimeOffset? CurrentDeadline =>
        Deadline is { } wallTime ? new GpuExecutor.Clocks.HostDeadline(wallTime, GpuExecutor.Clocks.BootInstant.Parse(DeadlineOnBootClock)).Current : null;

    /// <summary>Who took the run's lease from this job, once another job did; the agent then stopped the training.</summary>
    [JsonPropertyName("lease_lost_to")]
    public string? LeaseLostTo { get; init; }

    /// <summary>Why the agent ended, once it has: its log's last line.</summary>
    [JsonPropertyName("end_reason")]
    public string? EndReason { get; init; }

    /// <summary>Why the final pass left changes uncommitted; null when it committed them or there were none.</summary>
    [JsonPropertyName("final_pass_note")]
    public string? FinalPassNote { get; init; }
}
