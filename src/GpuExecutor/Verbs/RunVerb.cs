using GpuExecutor.Checkpoints;
using GpuExecutor.Configuration;
using GpuExecutor.Containers;
using GpuExecutor.Continuation;
using GpuExecutor.HostFiles;
using GpuExecutor.Jobs;
using GpuExecutor.Outcomes;
using GpuExecutor.Protocol;
using GpuExecutor.Stages;

namespace GpuExecutor.Verbs;

/// <summary>
/// `run SCRIPT STAGE`: pipe the runner's script (a file on the host) into bash inside the job's
/// container, stream its output live, and report its exit code the way the runner expects.
/// For the main step of a job with checkpoints, also: the stop signal a margin before the job's
/// deadline, the agent's commits in the job log, and the final commit awaited at the end.
/// </summary>
public static class RunVerb
{
    private static readonly TimeSpan StatusPollInterval = TimeSpan.FromSeconds(2);

    public static async Task<int> RunAsync(VerbContext context, string scriptPath, string stageName)
    {
        var config = context.Config;
        var payload = JobPayloadReader.Read(context.Environment);
        var job = JobIdentity.From(payload);
        var hasHelper = config.Images.Helper.Length > 0;
        // A job that adopted another job's running training (re-attach, see prepare): its user
        // stages go to that container, and the stages that would change the worktree under the
        // training are skipped.
        var adopted = Reattach.ReadAdoption(config.StateDir, job.JobId);
        if (adopted is not null && Reattach.SkippedWhenAdopting.Contains(stageName))
        {
            context.Log.WriteLine($"Re-attach: {stageName} skipped: this job follows job {adopted.JobId}'s training in {adopted.Container}, whose worktree must not change under it.");
            return ExitCodes.Success;
        }
        var container = adopted is not null && (!hasHelper || StagePlacement.For(stageName) == StageContainer.Job)
            ? adopted.Container
            : JobContainerNames.ForStage(job.JobId, stageName, hasHelper);
        var following = adopted is not null && stageName == adopted.Stage;
        // The agent committing this run's checkpoints: the adopted job's, which goes on.
        var agentJobId = adopted?.JobId ?? job.JobId;

        byte[] script;
        try
        {
            // The runner writes the script on the host (mode 0700) and it is small: read it whole.
            script = await File.ReadAllBytesAsync(scriptPath, context.Stop);
        }
        catch (Exception error) when (error is IOException or UnauthorizedAccessException)
        {
            throw new SystemFailureException($"the stage script '{scriptPath}' cannot be read: {error.Message}", error);
        }

        var checkpoints = StagePlacement.IsUserStep(stageName)
            ? CheckpointRequest.FromJob(payload.VariableMap(), job)
            : null;
        var directories = checkpoints is null ? null : RunDirectories.For(config.StateDir, checkpoints.RunKey);

        using var driver = new DockerContainerDriver(config.Docker.Endpoint);
        using var beforeDeadline = new CancellationTokenSource();
        if (checkpoints is not null && (adopted?.Deadline ?? await DeadlineAsync(driver, job, context.Stop)) is { } deadline)
        {
            var signalIn = deadline - config.Checkpoints.DeadlineMargin - DateTimeOffset.UtcNow;
            beforeDeadline.CancelAfter(signalIn > TimeSpan.Zero ? signalIn : TimeSpan.Zero);
        }
        using var stopReporting = new CancellationTokenSource();
        var reporting = directories is null ? Task.CompletedTask : ReportCommitsAsync(directories, agentJobId, context.Log, stopReporting.Token);

        // While it follows the run's training, `run` holds the run's main-stage lock and leaves a
        // record of the stage: a later job that finds the record with the lock free and the
        // container running knows no runner follows that training any more, and adopts it.
        var nonce = following ? adopted!.Nonce : StageServer.NewNonce();
        using var followingLock = directories is null ? null : HostLock.TryAcquire(directories.MainStageLock, create: true);
        if (directories is not null && followingLock is not null)
            Reattach.WriteMainStage(directories, new MainStageRecord(agentJobId, container, stageName, nonce, DateTimeOffset.UtcNow));

        if (following)
            context.Log.WriteLine($"Re-attach: following job {adopted!.JobId}'s {stageName} in {container} from here on; what it printed before is in job {adopted.JobId}'s log and the container's log.");

        async Task<StageResult> RunStageAsync()
        {
            // Raw, unbuffered standard streams: output reaches the job log as it is produced, and
            // memory stays flat however long the stage prints.
            await using var stdout = Console.OpenStandardOutput();
            await using var stderr = Console.OpenStandardError();
            // Before the stop SIGKILLs what outlived the grace period, the agent learns that the
            // trainer's uncommitted changes may be torn.
            Action? beforeKill = directories is null ? null : () => CheckpointAgent.NoteWriterKilled(directories, agentJobId);
            var runner = new StageRunner(driver, config.Run, message => context.Log.WriteLine(message), beforeKill);
            return await runner.RunAsync(container, script, stdout, stderr, context.Stop, beforeDeadline.Token, nonce, following);
        }

        async Task<(StageResult Result, int? ContinuesAs)> CommitAsync(StageResult result)
        {
            // The training is over: nothing is left to adopt.
            if (directories is not null && followingLock is not null)
                File.Delete(Reattach.MainStageFile(directories));
            // Read at once: the signal went out while the stage ran, so the run stopped at its deadline.
            var reachedDeadline = beforeDeadline.IsCancellationRequested;
            await stopReporting.CancelAsync();
            await reporting;
            var next = directories is not null && reachedDeadline ? RequestContinuation(config.Continuation, payload, directories, context.Log) : null;
            if (directories is not null)
                await AwaitFinalCommitAsync(config.Checkpoints.FinalCommitWait, directories, agentJobId, context.Log);
            return (result, next);
        }

        var (result, continuesAs) = await StageLifecycle.RunAsync(config.StateDir, job.JobId, RunStageAsync, CommitAsync, context.Stop);

        // A continued job must not succeed, whatever the trainer's exit code: later stages of the
        // pipeline would start on an unfinished model. The retry replaces it in the pipeline.
        if (continuesAs is { } next)
            throw new BuildFailureException($"the run reached this job's deadline; once the job has ended, it is retried through the GitLab API as segment {next}, which resumes from the newest checkpoint.", Math.Max(result.ExitCode, 1));
        if (result.ExitCode == 0)
            return ExitCodes.Success;

        // The stage server replied, so the container was alive when the script ended: a non-zero
        // code is the script's own (an OOM-killed trainer's 137 included), never the host's.
        var exitCode = Math.Max(result.ExitCode, 1);
        throw new BuildFailureException(result.Stopped ? $"stage '{stageName}' was stopped (exit code {exitCode})." : "", exitCode);
    }

    /// <summary>
    /// At the deadline of a job in a continuation chain (prepare placed it in one): asks the agent
    /// to retry the job once it has ended, unless the chain is at its cap. Returns the segment the
    /// retry will be, or null when the run stops here.
    /// </summary>
    private static int? RequestContinuation(ContinuationSettings settings, JobPayload payload, RunDirectories directories, TextWriter log)
    {
        if (!settings.Enabled || ContinuationFiles.ReadSegment(directories, payload.Id) is not { } place)
            return null;
        if (place.Segment >= settings.MaxSegments)
        {
            log.WriteLine($"Continuation: this job, segment {place.Segment} of at most {settings.MaxSegments}, reached its deadline; the run is not continued (continuation.max_segments). A new job of the run resumes from the newest checkpoint.");
            return null;
        }
        var next = place.Segment + 1;
        // The project id from the payload the runner wrote, never from a job variable.
        ContinuationFiles.WriteRequest(directories, new ContinuationRequest(payload.JobInfo.ProjectId, payload.Id, next));
        log.WriteLine($"Continuation: this job, segment {place.Segment} of at most {settings.MaxSegments}, reached its deadline. Once it has ended, and if its last checkpoint is safe in the store, the checkpoint agent retries it through the GitLab API as segment {next}.");
        return next;
    }

    /// <summary>The job's deadline, from its container's label (prepare's start plus the job's timeout).</summary>
    private static async Task<DateTimeOffset?> DeadlineAsync(IContainerDriver driver, JobIdentity job, CancellationToken cancellationToken)
    {
        var containers = await driver.FindAsync(JobLabels.SelectJob(job.JobId), cancellationToken);
        return containers.Select(found => JobLabels.ReadDeadline(found.Labels)).FirstOrDefault(deadline => deadline is not null);
    }

    /// <summary>Shows the agent's commits, and its failures, in the job log as they happen.</summary>
    private static async Task ReportCommitsAsync(RunDirectories directories, long jobId, TextWriter log, CancellationToken cancellationToken)
    {
        long? shownGeneration = null;
        string? shownError = null;
        try
        {
            while (true)
            {
                await Task.Delay(StatusPollInterval, cancellationToken);
                if (CheckpointAgent.ReadStatus(directories, jobId) is not { } status)
                    continue;
                if (status.CommittedGeneration is { } generation && generation != shownGeneration)
                {
                    shownGeneration = generation;
                    log.WriteLine($"Checkpoint generation {generation} committed: {status.UploadedBytes / 1048576.0:0.0} of {status.TotalBytes / 1048576.0:0.0} MiB uploaded (the rest was unchanged).");
                }
                if (status.LastError is { } error && error != shownError)
                    log.WriteLine($"WARNING: checkpoint commit failing since {status.FailingSince:HH:mm:ss} UTC, training goes on and the agent retries: {error}");
                shownError = status.LastError;
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    /// <summary>
    /// Asks the agent for its final pass (the trainer has exited, so the directory holds its last
    /// checkpoint) and waits for it, then says loudly whether the last checkpoint is safe.
    /// </summary>
    private static async Task AwaitFinalCommitAsync(TimeSpan wait, RunDirectories directories, long jobId, TextWriter log)
    {
        var request = DateTime.UtcNow.Ticks;
        File.WriteAllText(directories.FinalPassRequest(jobId), request.ToString(System.Globalization.CultureInfo.InvariantCulture));
        var giveUp = DateTime.UtcNow + wait;
        CheckpointAgentStatus? status = null;
        var agentGone = false;
        while (DateTime.UtcNow < giveUp)
        {
            status = CheckpointAgent.ReadStatus(directories, jobId);
            if (status is not null && (status.FinalPassDone >= request || status.Exited))
                break;
            // The agent holds its lock for as long as it lives: a free lock means it died
            // (killed, host OOM), and waiting longer would only delay the job's end.
            using (var free = HostLock.TryAcquire(directories.AgentLock))
                agentGone = free is not null;
            if (agentGone)
                break;
            await Task.Delay(TimeSpan.FromMilliseconds(250));
        }

        if (agentGone && status?.Exited != true)
            log.WriteLine($"WARNING: THE NEWEST CHECKPOINT MAY NOT BE SAFE: the checkpoint agent of this job is not running (see its log in {directories.Root}); generation {status?.CommittedGeneration?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "(none)"} is the newest it committed.");
        else if (status is null || (status.FinalPassDone < request && !status.Exited))
            log.WriteLine($"WARNING: the checkpoint agent did not finish its final commit within {wait.TotalSeconds:0} s; it goes on after the job ends. Check its log in {directories.Root}.");
        else if (status.LastError is not null)
            log.WriteLine($"WARNING: THE NEWEST CHECKPOINT IS NOT SAFE YET: its commit has failed since {status.FailingSince:HH:mm:ss} UTC ({status.LastError}). The agent keeps retrying after the job; generation {status.CommittedGeneration?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "(none)"} is the newest in the store.");
        else if (status.FinalPassNote is { } note)
            log.WriteLine($"Checkpoint: {note}. {(status.CommittedGeneration is { } kept ? $"Generation {kept} is the newest in the store" : "The store has nothing new from this job")}.");
        else if (status.CommittedGeneration is { } generation)
            log.WriteLine($"Checkpoint: generation {generation} is the newest in the store: {status.CommittedFiles} files, {status.TotalBytes / 1048576.0:0.0} MiB, committed at {status.CommittedAt:HH:mm:ss} UTC.");
        else
            log.WriteLine("Checkpoint: this job committed nothing (no complete checkpoint appeared).");
    }
}
