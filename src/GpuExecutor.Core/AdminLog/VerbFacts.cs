namespace GpuExecutor.AdminLog;

/// <summary>
/// What a verb learned while it ran that belongs in its admin log line (its GPUs, its datasets'
/// figures, the generation it restored). Filled by the workflows as they go, so that a verb that
/// fails half-way still reports what it had done.
/// </summary>
public sealed class VerbFacts
{
    /// <summary>The job's payload, where the verb read it: its masked variables are redacted from the line.</summary>
    public Protocol.JobPayload? Payload { get; set; }

    /// <summary>For a verb without a job payload (the agent, the stream fetcher): the job it serves.</summary>
    public long? JobId { get; set; }
    public string? RunKey { get; set; }
    public string? Stage { get; set; }
    public IReadOnlyList<string>? Gpus { get; set; }
    public DatasetFigures? Datasets { get; set; }
    public CheckpointFigures? Checkpoint { get; set; }
}
