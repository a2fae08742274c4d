using GpuExecutor.Checkpoints;
using GpuExecutor.Configuration;
using GpuExecutor.Clocks;

namespace GpuExecutor.Continuation;

/// <summary>
/// The agent's last duty for a job that reached its deadline: wait until GitLab says the job has
/// ended (a running job cannot be retried), then retry it, recording the chain in the store.
/// </summary>
public sealed class JobContinuer(IGitLabJobs gitLab, CheckpointRepository repository, ContinuationSettings settings, Action<string> log)
{
    public async Task<long?> ContinueAsync(ContinuationRequest request, CancellationToken cancellationToken)
    {
        var giveUp = Monotonic.Now + settings.JobEndWait;
        GitLabJob job;
        while (!(job = await gitLab.GetJobAsync(request.ProjectId, request.JobId, cancellationToken)).HasEnded)
        {
            if (Monotonic.Now >= giveUp)
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
