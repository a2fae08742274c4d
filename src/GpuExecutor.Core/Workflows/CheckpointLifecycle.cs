using System.Globalization;
using GpuExecutor.Checkpoints;
using GpuExecutor.Configuration;
using GpuExecutor.Containers;
using GpuExecutor.Continuation;
using GpuExecutor.HostFiles;
using GpuExecutor.JobLog;
using GpuExecutor.Protocol;
using GpuExecutor.Storage;
using GpuExecutor.Clocks;

namespace GpuExecutor.Workflows;

/// <summary>
/// A training run's checkpoints through one job, shared by prepare and run: restore before the
/// first script (and the job's place in a continuation chain), the detached agent's start, the
/// agent's commits shown in the job log, and the final commit awaited and reported at the end.
/// </summary>
public sealed class CheckpointLifecycle(ExecutorConfig config, IContainerDriver driver, IObjectStoreOpener stores, TextWriter log)
{
    private static readonly TimeSpan StatusPollInterval = TimeSpan.FromSeconds(2);

    public RunDirectories DirectoriesOf(string runKey) => RunDirectories.For(config.StateDir, runKey);

    /// <summary>
    /// Puts the run's newest committed generation (or the pinned one, or nothing) in the run's
    /// work directory before any script runs; returns what the job's environment says about it.
    /// </summary>
    public async Task<Dictionary<string, string>> RestoreAsync(JobIdentity job, CheckpointRequest request, CancellationToken cancellationToken)
    {
        var directories = DirectoriesOf(request.RunKey);
        Directory.CreateDirectory(Path.GetDirectoryName(directories.Root)!);
        // Only the executor goes below STATE_DIR/checkpoints; the work directory is reached
        // through the container's mount.
        File.SetUnixFileMode(Path.GetDirectoryName(directories.Root)!, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        Directory.CreateDirectory(directories.Root);
        var containerDir = config.Checkpoints.ContainerDir;
        var environment = new Dictionary<string, string>
        {
            ["CHECKPOINT_DIR"] = containerDir,
            ["CHECKPOINT_RUN_KEY"] = request.RunKey,
            ["CHECKPOINT_MARKER"] = containerDir + "/" + CheckpointPaths.CompleteMarker,
            ["CHECKPOINT_RESTORED_GENERATION"] = "",
            ["CHECKPOINT_RESTORED_FROM_JOB"] = "",
            ["CHECKPOINT_RESTORED_COMMITTED_AT"] = "",
        };
        using (JobLogSection.Start(log, "gpu_executor_checkpoint_restore", $"Checkpoint restore: run {request.RunKey}", collapsed: false))
        {
            var (store, repository) = CheckpointStores.Open(stores, config, request.RunKey, log.WriteLine);
            using var _ = store;
            var lease = await TakeLeaseAsync(job, repository, cancellationToken);
            await WarnAboutAnotherLiveJobAsync(job, cancellationToken);
            await WaitForEarlierAgentAsync(directories, cancellationToken);
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var restorer = new CheckpointRestorer(repository, directories, log.WriteLine, $"job {job.JobId} on {config.HostName}");
            RestoreResult? restored = null;
            if (request.Restore)
                restored = await restorer.RestoreAsync(request.PinnedGeneration, cancellationToken);
            else
                restorer.StartEmpty();
            if (!request.Restore)
                log.WriteLine($"  {CheckpointRequest.RestoreVariable}=off: the job starts with an empty {containerDir}.");
            else if (restored is null)
                log.WriteLine($"  run {request.RunKey} has no committed checkpoint yet: the job starts with an empty {containerDir}.");
            else
            {
                foreach (var skipped in restored.Skipped)
                {
                    log.WriteLine(skipped.FoundNow
                        ? $"  WARNING: GENERATION {skipped.Generation} OF RUN {request.RunKey} IS CORRUPT: {skipped.Reason}. It is now recorded as bad in the store: restores skip it, retention keeps it for inspection."
                        : $"  WARNING: generation {skipped.Generation} of run {request.RunKey} is recorded as bad ({Printable.Of(skipped.Reason)}) and is skipped.");
                }
                if (restored.Skipped.Count > 0)
                    log.WriteLine($"  WARNING: FELL BACK to generation {restored.Generation}, the newest that verifies; training resumes from there, not from generation {restored.Skipped[0].Generation}.");
                log.WriteLine($"  restored generation {restored.Generation} (committed {restored.CommittedAt.UtcDateTime:yyyy-MM-dd HH:mm:ss} UTC by job {restored.FromJobId}{(restored.FromHost is { } host ? " on host " + Printable.Of(host, 63) : "")}): " +
                              $"{Files(restored.Files)}, {Sizes.Describe(restored.Bytes)} ({Sizes.Describe(restored.DownloadedBytes)} downloaded, the rest already on this host) in {clock.Elapsed.TotalSeconds:0.0} s, " +
                              (restored.KeptInPlace
                                  ? "kept in place: this host's agent committed it from this directory, and every file is the same inode, size, mtime and ctime as when it was hashed."
                                  : "every file checked against its SHA-256."));
                environment["CHECKPOINT_RESTORED_GENERATION"] = restored.Generation.ToString(CultureInfo.InvariantCulture);
                environment["CHECKPOINT_RESTORED_FROM_JOB"] = restored.FromJobId.ToString(CultureInfo.InvariantCulture);
                environment["CHECKPOINT_RESTORED_COMMITTED_AT"] = restored.CommittedAt.UtcDateTime.ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture);
            }
            var segment = new RunSegment(job.JobId, config.HostName, DateTimeOffset.UtcNow)
            {
                RestoredGeneration = restored?.Generation,
                RestoredFrom = restored is null ? null : $"job {restored.FromJobId}" + (restored.FromHost is { } from ? $" on host {from}" : ""),
                Fallbacks = restored is { Skipped.Count: > 0 } ? restored.Skipped.Select(skip => $"generation {skip.Generation}: {skip.Reason}").ToList() : null,
                Lease = lease,
            };
            await WriteHistoryAsync(request.RunKey, open => open.WriteSegmentAsync(segment, cancellationToken), repository);
            log.WriteLine($"  {containerDir} is committed to the store whenever {CheckpointPaths.CompleteMarker} appears in it" +
                          (config.Checkpoints.QuietPeriod > TimeSpan.Zero ? $" (or, until the first marker, after {config.Checkpoints.QuietPeriod.TotalSeconds:0} s without changes)." : "."));
            if (config.Continuation.Enabled && request.Continue)
                await PlaceInChainAsync(job, repository, directories, environment, cancellationToken);
        }
        return environment;
    }

    /// <summary>
    /// One trainer per run, across hosts: takes the run's lease in the store for this job, waiting
    /// while another job (here or on another host) holds it live, and says whose it was.
    /// </summary>
    private async Task<string> TakeLeaseAsync(JobIdentity job, CheckpointRepository repository, CancellationToken cancellationToken)
    {
        var lease = TrainingLease.For(repository, config, line => log.WriteLine("  " + line));
        var container = JobContainerNames.For(job.JobId, JobContainerNames.JobRole);
        LeaseAcquisition taken;
        try
        {
            taken = await lease.AcquireAsync(job.JobId, container, async holder => !await Adoption.IsRunningAsync(driver, holder.Container, cancellationToken), config.Checkpoints.LeaseWait, cancellationToken);
        }
        catch (ObjectStoreException error)
        {
            // Training does not wait for the store (commits are retried); the agent takes the
            // lease once the store answers, unless another job took it meanwhile.
            log.WriteLine($"  WARNING: the run's lease could not be taken: {error.Message}. The job goes on; its agent takes the lease once the store answers.");
            return "not taken (the store did not answer)";
        }
        var previous = taken.Previous;
        log.WriteLine(taken.How switch
        {
            LeaseTaken.Released => $"  run lease: taken for this job on {config.HostName}; {previous!.Holder} released it at {previous.ReleasedAt:HH:mm:ss} UTC.",
            LeaseTaken.Expired => $"  WARNING: run lease taken over from {previous!.Holder}, whose lease expired at {previous.ExpiresAt.UtcDateTime:HH:mm:ss} UTC without being renewed (its host or agent is gone). Should that training come back, its agent stops it.",
            LeaseTaken.HolderGoneHere => $"  run lease: taken for this job; {previous!.Holder}'s container {previous.Container} is gone from this host.",
            _ => $"  run lease: taken for this job on {config.HostName}; the agent renews it every {lease.RenewEvery.TotalSeconds:0} s.",
        });
        return taken.How switch
        {
            LeaseTaken.Released => $"released by {previous!.Holder}",
            LeaseTaken.Expired => $"taken over from {previous!.Holder}, whose lease expired at {previous.ExpiresAt.UtcDateTime:yyyy-MM-dd HH:mm:ss} UTC",
            LeaseTaken.HolderGoneHere => $"taken from {previous!.Holder}, whose container was gone",
            _ => "free",
        };
    }

    /// <summary>
    /// Writes to the run's history. The history is for people: a store that does not take it
    /// costs the job nothing but a line. <paramref name="repository"/> is the run's, if open.
    /// </summary>
    private async Task WriteHistoryAsync(string runKey, Func<CheckpointRepository, Task> write, CheckpointRepository? repository = null)
    {
        IObjectStore? opened = null;
        try
        {
            if (repository is null)
                (opened, repository) = CheckpointStores.Open(stores, config, runKey, log.WriteLine);
            await write(repository);
        }
        catch (ObjectStoreException error)
        {
            log.WriteLine($"WARNING: the run's history could not be written: {error.Message}");
        }
        finally
        {
            opened?.Dispose();
        }
    }

    /// <summary>Re-attach, in the run's history: the adopted job's segment ends, this job's begins.</summary>
    public Task RecordAdoptionAsync(JobIdentity job, long adoptedJobId, CancellationToken cancellationToken) =>
        WriteHistoryAsync(job.RunKey, async repository =>
        {
            var now = DateTimeOffset.UtcNow;
            await repository.UpdateSegmentAsync(adoptedJobId, segment => segment.EndedAt is null
                ? segment with { EndedAt = now, Outcome = "runner lost", Why = $"its runner died while the training went on; job {job.JobId} adopted the training" }
                : null, cancellationToken);
            await repository.WriteSegmentAsync(new RunSegment(job.JobId, config.HostName, now) { AdoptedJob = adoptedJobId, Lease = $"kept by job {adoptedJobId}'s agent" }, cancellationToken);
        });

    /// <summary>The main step started, or ended: its place in the run's history.</summary>
    public Task RecordTrainingAsync(JobIdentity job, Func<RunSegment, RunSegment?> change, CancellationToken cancellationToken) =>
        WriteHistoryAsync(job.RunKey, repository => repository.UpdateSegmentAsync(job.JobId, change, cancellationToken));

    /// <summary>
    /// The GPU samples of one segment of the run (the job that held the GPUs), as the store's
    /// runs/RUN/telemetry/JOB.gpu.csv: the run's whole history of GPU use outlives its hosts.
    /// </summary>
    public Task RecordGpuSamplesAsync(string runKey, long samplesJobId, byte[] csv, CancellationToken cancellationToken) =>
        WriteHistoryAsync(runKey, repository => repository.WriteRunRecordAsync(TelemetryRecordName(samplesJobId), csv, cancellationToken));

    /// <summary>A step's whole log, compressed, under the run: it outlives the host.</summary>
    public Task RecordStepLogAsync(string runKey, long jobId, string stageName, string compressedLog, CancellationToken cancellationToken) =>
        WriteHistoryAsync(runKey, repository => repository.WriteRunFileAsync(StepLogRecordName(jobId, stageName), compressedLog, cancellationToken));

    /// <summary>logs/JOB.log.gz for the job's script, logs/JOB.STEP.log.gz for its other steps (release's, say).</summary>
    public static string StepLogRecordName(long jobId, string stageName) =>
        "logs/" + jobId.ToString("D12", CultureInfo.InvariantCulture) + (stageName is "step_script" or "build_script" ? "" : "." + JobLog.StepLogFiles.SafeStepName(stageName)) + ".log.gz";

    public static string TelemetryRecordName(long jobId) => "telemetry/" + jobId.ToString("D12", CultureInfo.InvariantCulture) + ".gpu.csv";

    /// <summary>Starts the run's agent for this job's container, detached, and says where its log is.</summary>
    public void StartAgent(ICheckpointAgentLauncher launcher, JobIdentity job, string runKey)
    {
        var agentLog = launcher.Start(job.JobId, runKey, JobContainerNames.For(job.JobId, JobContainerNames.JobRole));
        log.WriteLine($"Checkpoint agent started for run {runKey} (its log: {agentLog}).");
    }

    /// <summary>
    /// Which segment of the run's continuation chain this job is, from the record in the store,
    /// for the job log, the job's environment and run (which decides at the deadline whether to
    /// ask for one more).
    /// </summary>
    private async Task PlaceInChainAsync(JobIdentity job, CheckpointRepository repository, RunDirectories directories, Dictionary<string, string> environment, CancellationToken cancellationToken)
    {
        var settings = config.Continuation;
        var record = await repository.ReadContinuationAsync(cancellationToken);
        var segment = ContinuationRecord.SegmentOf(record, job.JobId);
        long? continues = segment > 1 ? record!.FromJob : null;
        ContinuationFiles.WriteSegment(directories, job.JobId, new JobSegment(segment, continues));
        environment["CHECKPOINT_SEGMENT"] = segment.ToString(CultureInfo.InvariantCulture);
        environment["CHECKPOINT_MAX_SEGMENTS"] = settings.MaxSegments.ToString(CultureInfo.InvariantCulture);
        if (record is { State: ContinuationRecord.Failed } && segment == 1)
            log.WriteLine($"  WARNING: the last continuation of this run (of job {record.FromJob}) failed: {record.Error}");
        var place = continues is { } previous
            ? $"  Continuation: this job is segment {segment} of at most {settings.MaxSegments}, continuing job {previous}."
            : $"  Continuation: this job is segment 1 of at most {settings.MaxSegments}.";
        log.WriteLine(place + (segment < settings.MaxSegments
            ? " If it reaches its deadline, it is retried through the GitLab API once it has ended, and the retry resumes from the newest checkpoint."
            : " It is the last one continuation.max_segments allows: at its deadline the run stops."));
    }

    /// <summary>
    /// Another job of the same run whose container still runs: its runner died before cleanup, or
    /// the run was started twice. Both trainers then commit to the run and the newest generation
    /// may come from either, so the job log says so loudly, with what to do about it.
    /// </summary>
    private async Task WarnAboutAnotherLiveJobAsync(JobIdentity job, CancellationToken cancellationToken)
    {
        var sameRun = new Dictionary<string, string>
        {
            [JobLabels.Managed] = "true",
            [JobLabels.RunKey] = job.RunKey,
            [JobLabels.Role] = JobContainerNames.JobRole,
        };
        foreach (var other in await driver.FindAsync(sameRun, cancellationToken))
        {
            var otherJob = other.Labels.GetValueOrDefault(JobLabels.JobId, "?");
            if (otherJob == job.JobId.ToString(CultureInfo.InvariantCulture))
                continue;
            if (!await Adoption.IsRunningAsync(driver, other.Name, cancellationToken))
                continue;
            log.WriteLine($"  WARNING: job {otherJob} of this run is still running in container {other.Name} (its runner may have died before cleanup, or the run was started twice). " +
                          $"Both jobs now commit checkpoints to run {job.RunKey}, and the newest generation may come from either. An admin can stop it with `docker rm -f {other.Name}`; `gpu-executor gc` removes it once its deadline has passed.");
        }
    }

    /// <summary>
    /// The previous job of the run (cancelled, timed out) may still be committing its last
    /// checkpoint: restore waits for that agent to finish, up to the final commit wait, so the
    /// job resumes from the newest checkpoint and not the one before it.
    /// </summary>
    private async Task WaitForEarlierAgentAsync(RunDirectories directories, CancellationToken cancellationToken)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(config.Checkpoints.FinalCommitWait);
        var waiting = HostLock.AcquireAsync(directories.AgentLock, timeout.Token);
        if (!waiting.IsCompleted)
            log.WriteLine("  the agent of an earlier job of this run is still committing; waiting for it...");
        try
        {
            (await waiting).Dispose();
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            log.WriteLine($"  WARNING: the earlier agent did not finish within {config.Checkpoints.FinalCommitWait.TotalSeconds:0} s; restoring what is committed now.");
        }
    }

    /// <summary>How many times one `run` starts a dead agent again: a crash that repeats is not cured by more.</summary>
    private const int MostAgentRestarts = 3;

    /// <summary>
    /// Shows the agent's commits, and its failures, in the job log as they happen, until
    /// cancelled. An agent that died while the training goes on (killed, out of memory) is
    /// started again through <paramref name="restartAgent"/>: without it, every checkpoint the
    /// trainer writes until the job ends would be lost with the host.
    /// </summary>
    public async Task ReportCommitsAsync(RunDirectories directories, long jobId, CancellationToken cancellationToken, Func<string>? restartAgent = null)
    {
        long? shownGeneration = null;
        string? shownError = null;
        var restarts = 0;
        try
        {
            while (true)
            {
                await Task.Delay(StatusPollInterval, cancellationToken);
                if (CheckpointAgent.ReadStatus(directories, jobId) is not { } status)
                    continue;
                if (restartAgent is not null && restarts < MostAgentRestarts && AgentDied(directories, jobId, status))
                {
                    restarts++;
                    log.WriteLine($"WARNING: the checkpoint agent of this run died (pid {status.Pid}, without ending itself); starting it again, {restarts} of at most {MostAgentRestarts} times (its log: {restartAgent()}).");
                    continue;
                }
                if (status.CommittedGeneration is { } generation && generation != shownGeneration)
                {
                    shownGeneration = generation;
                    log.WriteLine($"Checkpoint generation {generation} committed: {Sizes.Describe(status.UploadedBytes)} of {Sizes.Describe(status.TotalBytes)} uploaded (the rest was unchanged).");
                }
                if (status.LeaseLostTo is { } taker)
                {
                    log.WriteLine($"WARNING: THIS JOB LOST THE RUN'S LEASE to {taker}: its lease expired while this host could not renew it, and that job now trains the run. The agent commits nothing more from this job and stops its training, so that two trainers never write one run.");
                    return;
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
    /// Dead, not done: its status says it has not ended, its process is gone, and nobody holds
    /// the run's agent lock (a new agent takes it as it starts).
    /// </summary>
    private static bool AgentDied(RunDirectories directories, long jobId, CheckpointAgentStatus status)
    {
        if (status.Exited || status.Pid <= 0 || OrphanedAgents.IsAgentOf(status.Pid, jobId))
            return false;
        using var free = HostLock.TryAcquire(directories.AgentLock);
        return free is not null;
    }

    /// <summary>
    /// At the deadline of a job in a continuation chain (prepare placed it in one): asks the agent
    /// to retry the job once it has ended, unless the chain is at its cap. Returns the segment the
    /// retry will be, or null when the run stops here.
    /// </summary>
    public int? RequestContinuation(JobPayload payload, RunDirectories directories)
    {
        var settings = config.Continuation;
        if (!settings.Enabled || ContinuationFiles.ReadSegment(directories, payload.Id) is not { } place)
            return null;
        if (place.Segment >= settings.MaxSegments)
        {
            log.WriteLine($"Continuation: this job, segment {place.Segment} of at most {settings.MaxSegments}, reached its deadline; the run is not continued (continuation.max_segments). A new job of the run resumes from the newest checkpoint.");
            Metrics.MetricCounters.Add(config.StateDir, (Metrics.HostMetrics.ContinuationsRefused, 1));
            return null;
        }
        var next = place.Segment + 1;
        // The project id from the payload the runner wrote, never from a job variable.
        ContinuationFiles.WriteRequest(directories, new ContinuationRequest(payload.JobInfo.ProjectId, payload.Id, next));
        log.WriteLine($"Continuation: this job, segment {place.Segment} of at most {settings.MaxSegments}, reached its deadline. Once it has ended, and if its last checkpoint is safe in the store, the checkpoint agent retries it through the GitLab API as segment {next}.");
        return next;
    }

    /// <summary>
    /// The number of the next final pass to ask <paramref name="jobId"/>'s agent for: the time, but
    /// always above every earlier request and every pass the agent has done, even after the wall
    /// clock went back. The agent counts a pass as done once its number reaches the request, so a
    /// smaller number would be answered at once, before the last checkpoint is committed.
    /// </summary>
    public static long NextFinalPassRequest(RunDirectories directories, long jobId) =>
        Math.Max(DateTime.UtcNow.Ticks, Math.Max(CheckpointAgent.ReadFinalPassRequest(directories, jobId), CheckpointAgent.ReadStatus(directories, jobId)?.FinalPassDone ?? 0) + 1);

    /// <summary>
    /// Asks the agent for its final pass (the trainer has exited, so the directory holds its last
    /// checkpoint) and waits for it, then says in one line what was committed, or why nothing was.
    /// </summary>
    public async Task AwaitFinalCommitAsync(RunDirectories directories, long jobId)
    {
        var wait = config.Checkpoints.FinalCommitWait;
        var request = NextFinalPassRequest(directories, jobId);
        File.WriteAllText(directories.FinalPassRequest(jobId), request.ToString(CultureInfo.InvariantCulture));
        var giveUp = Monotonic.Now + wait;
        CheckpointAgentStatus? status = null;
        var agentGone = false;
        while (Monotonic.Now < giveUp)
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
        log.WriteLine(FinalCommitLine(status, agentGone, request, wait, directories));
    }

    private static string FinalCommitLine(CheckpointAgentStatus? status, bool agentGone, long request, TimeSpan wait, RunDirectories directories)
    {
        var newest = status?.CommittedGeneration?.ToString(CultureInfo.InvariantCulture) ?? "(none)";
        if (status?.LeaseLostTo is { } taker)
            return $"Checkpoint: nothing more was committed from this job: {taker} holds the run's lease. Generation {newest} is the newest this job committed.";
        if (agentGone && status?.Exited != true)
            return $"WARNING: THE NEWEST CHECKPOINT MAY NOT BE SAFE: the checkpoint agent of this job is not running (see its log in {directories.Root}); generation {newest} is the newest it committed.";
        if (status is null || (status.FinalPassDone < request && !status.Exited))
            return $"WARNING: the checkpoint agent did not finish its final commit within {wait.TotalSeconds:0} s; it goes on after the job ends. Check its log in {directories.Root}.";
        if (status.LastError is not null)
            return $"WARNING: THE NEWEST CHECKPOINT IS NOT SAFE YET: its commit has failed since {status.FailingSince:HH:mm:ss} UTC ({status.LastError}). The agent keeps retrying after the job; generation {newest} is the newest in the store.";
        if (status.FinalPassNote is { } note)
            return $"Checkpoint: {note}. {(status.CommittedGeneration is { } kept ? $"Generation {kept} is the newest in the store" : "The store has nothing new from this job")}.";
        if (status.CommittedGeneration is { } generation)
            return $"Checkpoint: generation {generation} is the newest in the store: {Files(status.CommittedFiles)}, {Sizes.Describe(status.TotalBytes)}, committed at {status.CommittedAt:HH:mm:ss} UTC.";
        return "Checkpoint: this job committed nothing (no complete checkpoint appeared).";
    }

    private static string Files(int count) => count == 1 ? "1 file" : $"{count.ToString(CultureInfo.InvariantCulture)} files";
}
