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

/// <summary>The host files that carry continuation between prepare, run and the agent, in the run's directory.</summary>
public static class ContinuationFiles
{
    public static string SegmentFile(RunDirectories directories, long jobId) =>
        Path.Combine(directories.Root, $"segment-{jobId.ToString(CultureInfo.InvariantCulture)}.json");

    public static string RequestFile(RunDirectories directories, long jobId) =>
        Path.Combine(directories.Root, $"continue-{jobId.ToString(CultureInfo.InvariantCulture)}.json");

    public static void WriteSegment(RunDirectories directories, long jobId, JobSegment segment) =>
        StateFiles.Write(SegmentFile(directories, jobId), segment, ContinuationJsonContext.Default.JobSegment);

    public static JobSegment? ReadSegment(RunDirectories directories, long jobId) =>
        StateFiles.Read(SegmentFile(directories, jobId), ContinuationJsonContext.Default.JobSegment);

    public static void WriteRequest(RunDirectories directories, ContinuationRequest request) =>
        StateFiles.Write(RequestFile(directories, request.JobId), request, ContinuationJsonContext.Default.ContinuationRequest);

    public static ContinuationRequest? ReadRequest(RunDirectories directories, long jobId) =>
        StateFiles.Read(RequestFile(directories, jobId), ContinuationJsonContext.Default.ContinuationRequest);
}

/// <summary>
/// The agent's last duty for a job that reached its deadline: wait until GitLab says the job has
/// ended (a running job cannot be retried), then retry it, recording the chain in the store.
/// </summary>
public sealed class JobContinuer(GitLabClient gitLab, CheckpointRepository repository, ContinuationSettings settings, Action<string> log)
{
    public async Task<long?> ContinueAsync(ContinuationRequest request, CancellationToken cancellationToken)
    {
        var giveUp = DateTime.UtcNow + settings.JobEndWait;
        GitLabJob job;
        while (!(job = await gitLab.GetJobAsync(request.ProjectId, request.JobId, cancellationToken)).HasEnded)
        {
            if (DateTime.UtcNow >= giveUp)
            {
                log($"continuation: job {request.JobId} is still '{job.Status}' after {settings.JobEndWait.TotalMinutes:0} min; not continued.");
                return null;
            }
            await Task.Delay(settings.JobEndPollInterval, cancellationToken);
        }

        // run failed the job on purpose; a job that ended otherwise was cancelled (or changed) by
        // a person after the deadline signal, and a person's decision stands.
        if (job.Status != "failed")
        {
            log($"continuation: job {request.JobId} ended as '{job.Status}', not as the failure run gave it at its deadline; not continued.");
            return null;
        }
        log($"continuation: job {request.JobId} ended ({job.Status}); retrying it as segment {request.NextSegment} of {settings.MaxSegments}.");
        await repository.WriteContinuationAsync(new ContinuationRecord(request.NextSegment, request.JobId, null, ContinuationRecord.Retrying, DateTimeOffset.UtcNow), cancellationToken);
        GitLabJob next;
        try
        {
            next = await gitLab.RetryJobAsync(request.ProjectId, request.JobId, cancellationToken);
        }
        catch (GitLabApiException error)
        {
            await repository.WriteContinuationAsync(new ContinuationRecord(request.NextSegment, request.JobId, null, ContinuationRecord.Failed, DateTimeOffset.UtcNow, error.Message), cancellationToken);
            throw;
        }
        await repository.WriteContinuationAsync(new ContinuationRecord(request.NextSegment, request.JobId, next.Id, ContinuationRecord.Retried, DateTimeOffset.UtcNow), cancellationToken);
        log($"continuation: job {request.JobId} continues as job {next.Id} (segment {request.NextSegment} of {settings.MaxSegments}).");
        return next.Id;
    }
}

[JsonSerializable(typeof(ContinuationRecord))]
[JsonSerializable(typeof(JobSegment))]
[JsonSerializable(typeof(ContinuationRequest))]
public sealed partial class ContinuationJsonContext : JsonSerializerContext;
