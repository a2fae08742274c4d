using GpuExecutor.Checkpoints;
using GpuExecutor.Configuration;
using GpuExecutor.Containers;
using GpuExecutor.Continuation;
using GpuExecutor.HostFiles;
using GpuExecutor.Metrics;
using GpuExecutor.Outcomes;
using GpuExecutor.Storage;

namespace GpuExecutor.Workflows;

/// <summary>
/// The detached checkpoint agent's whole life (`checkpoints agent JOB RUN CONTAINER`): it holds
/// the run's agent lock while it commits, so the run's next prepare waits for its last commit,
/// and afterwards continues the job through GitLab where `run` asked for that.
/// </summary>
public sealed class CheckpointAgentHost(
    ExecutorConfig config,
    IContainerDriver driver,
    IObjectStoreOpener stores,
    Func<ContinuationSettings, Action<string>, IGitLabJobs> openGitLab,
    Action<string> log)
{
    private readonly HostMetricsTextfile _metrics = new(config, driver);

    public async Task RunAsync(long jobId, string run, string container, Func<CommitStep, Task>? afterStep, CancellationToken cancellationToken)
    {
        var directories = RunDirectories.For(config.StateDir, run);
        var (store, repository) = CheckpointStores.Open(stores, config, run, log);
        using var _ = store;
        var timing = new AgentTiming(config.Checkpoints.QuietPeriod, config.Checkpoints.PollInterval, config.Checkpoints.KeepGenerations)
        {
            GiveUpAfterJob = config.Checkpoints.AgentGiveUp,
            DaemonLostAfter = config.Checkpoints.AgentDaemonLost,
            EndAfterDeadline = config.Cleanup.GcGracePeriod,
            StopSignal = config.Run.StopSignal,
            StopGrace = config.Run.StopGracePeriod,
            StopBeforeDeadline = config.Checkpoints.DeadlineMargin,
        };
        // A job that adopted this agent's training (re-attach) keeps it going to its own deadline.
        DateTimeOffset? AdoptedUntil() => Reattach.AdoptedUntil(config.StateDir, jobId);
        // A `run` started the training's stage (its record names this container) and no longer holds
        // the lock it follows the stage under: its runner died, and no job adopted the training.
        bool NobodyFollows()
        {
            if (Reattach.ReadMainStage(directories) is not { } stage || stage.Container != container)
                return false;
            using var free = HostLock.TryAcquire(directories.MainStageLock);
            return free is not null;
        }
        Directory.CreateDirectory(directories.Root);
        // Held while the agent commits: the run's next prepare waits on it before restoring.
        using (await HostLock.AcquireAsync(directories.AgentLock, cancellationToken))
        {
            log($"agent started for container {container}, run {run}");
            var lease = TrainingLease.For(repository, config, log);
            await new CheckpointAgent(jobId, container, driver, repository, directories, timing, log, afterStep, AdoptedUntil, lease, NobodyFollows, CountCommitAsync).RunAsync(cancellationToken);
        }
        await RecordEndAsync(jobId, repository, directories, cancellationToken);
        // Outside the lock: the retry it makes is the run's next job, whose prepare takes the lock.
        await ContinueIfAskedAsync(jobId, repository, directories, cancellationToken);
    }

    /// <param name="uploadedBytes">The bytes a commit uploaded; null for a commit that failed.</param>
    private Task CountCommitAsync(long? uploadedBytes) => uploadedBytes is { } bytes
        ? _metrics.CountAsync((HostMetrics.CheckpointCommits, 1), (HostMetrics.CheckpointUploadedBytes, bytes))
        : _metrics.CountAsync((HostMetrics.CheckpointCommitFailures, 1));

    /// <summary>
    /// The job's end in the run's history, where its `run` could not write it (its runner died,
    /// or the run's lease was taken): the agent is the last of the job to know.
    /// </summary>
    private async Task RecordEndAsync(long jobId, CheckpointRepository repository, RunDirectories directories, CancellationToken cancellationToken)
    {
        var status = CheckpointAgent.ReadStatus(directories, jobId);
        var endedAt = DateTimeOffset.UtcNow;
        try
        {
            await repository.UpdateSegmentAsync(jobId, segment => segment.EndedAt is not null && status?.LeaseLostTo is null
                ? null
                : segment with
                {
                    EndedAt = segment.EndedAt ?? endedAt,
                    Outcome = status?.LeaseLostTo is not null ? "lease lost" : "ended unseen",
                    Why = status?.EndReason ?? "its agent ended",
                }, cancellationToken);
        }
        catch (ObjectStoreException error)
        {
            log($"the run's history could not be written: {error.Message}");
        }
    }

    /// <summary>
    /// When run asked for it (the job reached its deadline), retries the job through the GitLab
    /// API once it has ended; only if the agent's last commit succeeded, or the retry would resume
    /// from an older checkpoint than the one the trainer saved. Failures go to the agent's log and
    /// to the run's record in the store, where the next job's prepare shows them.
    /// </summary>
    private async Task ContinueIfAskedAsync(long jobId, CheckpointRepository repository, RunDirectories directories, CancellationToken cancellationToken)
    {
        var settings = config.Continuation;
        if (ContinuationFiles.ReadRequest(directories, jobId) is not { } request)
            return;
        long? continuedAs = null;
        try
        {
            if (!settings.Enabled)
                log("continuation: asked for, but [continuation] is no longer configured; not continued.");
            else if (CheckpointAgent.ReadStatus(directories, jobId) is { LastError: { } error })
                log($"continuation: not continued, the newest checkpoint is not safe in the store ({error}).");
            else
            {
                using var gitLab = openGitLab(settings, log);
                continuedAs = await new JobContinuer(gitLab, repository, settings, log).ContinueAsync(request, cancellationToken);
            }
        }
        catch (Exception error) when (error is GitLabApiException or SystemFailureException or IOException && !cancellationToken.IsCancellationRequested)
        {
            log($"continuation: job {jobId} could not be continued: {error.Message}");
        }
        finally
        {
            File.Delete(ContinuationFiles.RequestFile(directories, jobId));
            await _metrics.CountAsync(continuedAs is null ? (HostMetrics.ContinuationsRefused, 1) : (HostMetrics.Continuations, 1));
        }
    }
}
