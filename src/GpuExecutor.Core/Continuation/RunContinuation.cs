using System.Globalization;
using System.Text.Json.Serialization;
using GpuExecutor.Checkpoints;
using GpuExecutor.Configuration;
using GpuExecutor.Jobs;

namespace GpuExecutor.Continuation;

/// <summary>
/// The run's continuation chain, kept in the checkpoint store beside LATEST (so a retry that
/// lands on another host still knows its segment): which segment the next job is, which job it
/// continues, and whether the retry that creates it went through.
/// </summary>
public sealed record ContinuationRecord(
    [property: JsonPropertyName("segment")] int Segment,
    [property: JsonPropertyName("from_job")] long FromJob,
    [property: JsonPropertyName("next_job")] long? NextJob,
    [property: JsonPropertyName("state")] string State,
    [property: JsonPropertyName("at")] DateTimeOffset At,
    [property: JsonPropertyName("error")] string? Error = null)
{
    /// <summary>Written before the retry: its job may be picked up before the answer is recorded.</summary>
    public const string Retrying = "retrying";
    public const string Retried = "retried";
    public const string Failed = "failed";

    /// <summary>
    /// The segment <paramref name="jobId"/> is: the recorded one when the record names it as the
    /// retry, or when a retry is in flight and the job is not the one being continued (its answer
    /// has not been recorded yet); otherwise 1, a new chain (a person started this job).
    /// </summary>
    public static int SegmentOf(ContinuationRecord? record, long jobId) => record switch
    {
        { State: Retried } when record.NextJob == jobId => record.Segment,
        { State: Retrying } when record.FromJob != jobId => record.Segment,
        _ => 1,
    };
}

/// <summary>What prepare found for this job, for run: its segment, and the job it continues.</summary>
public sealed record JobSegment(
    [property: JsonPropertyName("segment")] int Segment,
    [property: JsonPropertyName("continues_job")] long? ContinuesJob);

/// <summary>What run asks of the agent when the job reached its deadline: retry this job once it has ended.</summary>
public sealed record ContinuationRequest(
    [property: JsonPropertyName("project_id")] long ProjectId,
    [property: JsonPropertyName("job_id")] long JobId,
    [property: JsonPropertyName("next_segment")] int NextSegment);

[JsonSerializable(typeof(ContinuationRecord))]
[JsonSerializable(typeof(JobSegment))]
[JsonSerializable(typeof(ContinuationRequest))]
public sealed partial class ContinuationJsonContext : JsonSerializerContext;
