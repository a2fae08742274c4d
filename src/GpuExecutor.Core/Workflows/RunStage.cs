using System.Globalization;
using GpuExecutor.Checkpoints;
using GpuExecutor.Configuration;
using GpuExecutor.Containers;
using GpuExecutor.Datasets;
using GpuExecutor.HostFiles;
using GpuExecutor.JobLog;
using GpuExecutor.Jobs;
using GpuExecutor.Outcomes;
using GpuExecutor.Protocol;
using GpuExecutor.Stages;
using GpuExecutor.Storage;
using GpuExecutor.Telemetry;

namespace GpuExecutor.Workflows;

/// <summary>
/// `run SCRIPT STAGE`: runs the runner's script inside the job's container, streams its output
/// live, and stops it through the one stop sequence. For the main step of a job with
/// checkpoints, also: the stop signal a margin before the job's deadline, the agent's commits in
/// the job log, the final commit awaited at the end, and the continuation asked for at the
/// deadline. For a job that adopted a dead job's training: the stages that would change its
/// worktree are skipped, and the main step follows that training to its end.
/// </summary>
public sealed class RunStage(ExecutorConfig config, IContainerDriver driver, IObjectStoreOpener stores, TextWriter log, ICheckpointAgentLauncher? agentLauncher = null)
{
    /// <summary>Returns when the stage succeeded; throws <see cref="BuildFailureException"/> with the script's exit code when it did not.</summary>
    /// <param name="projectDir">$CI_PROJECT_DIR as the runner passed it (untrusted): where the GPU samples are copied for `artifacts:`.</param>
    public async Task RunAsync(JobPayload payload, ReadOnlyMemory<byte> script, string stageName, Stream stdout, Stream stderr, CancellationToken stop, string? projectDir = null)
    {
        var job = JobIdentity.From(payload);
        var hasHelper = config.Images.Helper.Length > 0;
        var adopted = Reattach.ReadAdoption(config.StateDir, job.JobId);
        if (adopted is not null && Reattach.SkippedWhenAdopting.Contains(stageName))
        {
            log.WriteLine($"Re-attach: {stageName} skipped: this job follows job {adopted.JobId}'s training in {adopted.Container}, whose worktree must not change under it.");
            return;
        }
        var container = adopted is not null && (!hasHelper || StagePlacement.For(stageName) == StageContainer.Job)
            ? adopted.Container
            : JobContainerNames.ForStage(job.JobId, stageName, hasHelper);
        var following = adopted is not null && stageName == adopted.Stage;
        // The agent committing this run's checkpoints: the adopted job's, which goes on.
        var agentJobId = adopted?.JobId ?? job.JobId;

        var checkpoints = StagePlacement.IsUserStep(stageName) ? CheckpointRequest.FromJob(payload.VariableMap(), job) : null;
        var lifecycle = new CheckpointLifecycle(config, driver, stores, log);
        var directories = checkpoints is null ? null : lifecycle.DirectoriesOf(job.RunKey);

        using var beforeDeadline = new CancellationTokenSource();
        if (checkpoints is not null && (adopted?.Deadline ?? await ContainerTimeAsync(job, JobLabels.ReadDeadline, stop)) is { } deadline)
        {
            var signalIn = deadline - config.Checkpoints.DeadlineMargin - DateTimeOffset.UtcNow;
            beforeDeadline.CancelAfter(signalIn > TimeSpan.Zero ? signalIn : TimeSpan.Zero);
        }
        using var stopReporting = new CancellationTokenSource();
        Func<string>? restartAgent = agentLauncher is null ? null : () => agentLauncher.Start(agentJobId, job.RunKey, container);
        var reporting = directories is null ? Task.CompletedTask : lifecycle.ReportCommitsAsync(directories, agentJobId, stopReporting.Token, restartAgent);

        // While it follows the run's training, `run` holds the run's main-stage lock and leaves a
        // record of the stage: a later job that finds the record with the lock free and the
        // container running knows no runner follows that training any more, and adopts it.
        var nonce = following ? adopted!.Nonce : StageServer.NewNonce();
        using var followingLock = directories is null ? null : HostLock.TryAcquire(directories.MainStageLock, create: true);
        if (directories is not null && followingLock is not null)
            Reattach.WriteMainStage(directories, new MainStageRecord(agentJobId, container, stageName, nonce, DateTimeOffset.UtcNow));
        if (following)
            log.WriteLine($"Re-attach: following job {adopted!.JobId}'s {stageName} in {container} from here on; what it printed before is in job {adopted.JobId}'s log and the container's log.");

        // A user step's whole output goes to a file on the host as it streams; the job log gets
        // it within logs.job_log_budget, below the runner's output_limit.
        var whereTheLogIs = $"`gpu-executor logs {job.JobId}` on host {config.HostName}" + (checkpoints is null ? "" : $", or `gpu-executor logs {job.RunKey}` on any host of the store");
        await using var stepLog = StagePlacement.IsUserStep(stageName) ? StartStepLog(job, stageName, stdout, stderr, whereTheLogIs) : null;
        var stageStdout = stepLog?.Stdout ?? stdout;
        var stageStderr = stepLog?.Stderr ?? stderr;

        Task<StageResult> RunTheStageAsync()
        {
            // Before the stop SIGKILLs what outlived the grace period, the agent learns that the
            // trainer's uncommitted changes may be torn.
            Action? beforeKill = directories is null ? null : () => CheckpointAgent.NoteWriterKilled(directories, agentJobId);
            var runner = new StageRunner(driver, config.Run, log.WriteLine, beforeKill);
            return runner.RunAsync(container, script, stageStdout, stageStderr, stop, beforeDeadline.Token, nonce, following);
        }

        var reachedDeadline = false;
        async Task<(StageResult Result, int? ContinuesAs)> CommitAsync(StageResult result)
        {
            // The training is over: nothing is left to adopt.
            if (directories is not null && followingLock is not null)
                File.Delete(Reattach.MainStageFile(directories));
            // Read at once: the signal went out while the stage ran, so the run stopped at its deadline.
            reachedDeadline = beforeDeadline.IsCancellationRequested;
            await stopReporting.CancelAsync();
            await reporting;
            var next = directories is not null && reachedDeadline ? lifecycle.RequestContinuation(payload, directories) : null;
            if (directories is not null)
                await lifecycle.AwaitFinalCommitAsync(directories, agentJobId);
            return (result, next);
        }

        // Beside the stage, not before it: a slow store must not hold the training back.
        var startedAt = DateTimeOffset.UtcNow;
        // An adopted training reads the views, and records its waits in the builds directory, of
        // the job that started it: that job's stream goes on for this one.
        var streamingJob = job with { JobId = adopted?.JobId ?? job.JobId };
        var streamViews = StagePlacement.IsUserStep(stageName) ? new DatasetCache(config.StateDir, _ => { }).ViewsOf(streamingJob.JobId) : null;
        if (streamViews is not null && adopted is null && DatasetStreams.ReadStatus(streamViews) is { } streaming
            && await ContainerTimeAsync(job, JobLabels.ReadStartedAt, stop) is { } preparedAt)
            log.WriteLine($"Datasets stream in: the job's script starts {(startedAt - preparedAt).TotalSeconds:0.0} s after prepare began, with {streaming.Done} of {streaming.Total} streamed objects in since.");
        var recordingStart = checkpoints is null
            ? Task.CompletedTask
            : lifecycle.RecordTrainingAsync(job, segment => segment.TrainingStartedAt is null ? segment with { TrainingStartedAt = startedAt } : null, CancellationToken.None);
        StageResult outcome;
        int? continuesAs;
        try
        {
            (outcome, continuesAs) = await StageLifecycle.RunAsync(config.StateDir, job.JobId, RunTheStageAsync, CommitAsync, stop);
        }
        catch (SystemFailureException error) when (checkpoints is not null)
        {
            await recordingStart;
            await RecordEndAsync(lifecycle, job, "system failure", error.Message);
            throw;
        }
        await recordingStart;
        if (stepLog is not null)
            await ReportStepLogAsync(await stepLog.FinishAsync(), job, stageName, checkpoints is null ? null : job.RunKey, lifecycle);
        // Whatever the outcome: a failed or stopped training spent its GPU-hours too.
        if (StagePlacement.IsUserStep(stageName))
            await ReportGpuUsageAsync(streamingJob, checkpoints is null ? null : job.RunKey, lifecycle, projectDir);
        // A failure the job brought on itself, named: never a system failure GitLab would retry.
        List<(string, string)> writable = [("builds directory", JobWorkspace.For(config, streamingJob).BuildsHostDir)];
        if (directories is not null)
            writable.Add(("checkpoint directory", directories.Work));
        if (await StageFaults.ExplainAsync(driver, container, stageName, startedAt, outcome, CancellationToken.None, writable) is { } fault)
        {
            if (checkpoints is not null)
                await RecordEndAsync(lifecycle, job, "failed", fault);
            throw new BuildFailureException(fault, Math.Max(outcome.ExitCode, 1));
        }
        if (outcome.StoppedFromOutside)
        {
            // The training was signalled and may have saved, but it did not end by itself: the
            // host's infrastructure ended it, and GitLab's retry on a system failure resumes it.
            var message = $"the job's container was stopped from outside while stage '{stageName}' ran (docker stop, or a Docker daemon without live-restore shutting down, as on a host's reboot); the stage's exit code {outcome.ExitCode} is the stop's, not the job's."
                + (checkpoints is null ? "" : " The job's retry resumes from the newest checkpoint.");
            if (checkpoints is not null)
                await RecordEndAsync(lifecycle, job, "system failure", message);
            throw new SystemFailureException(message);
        }
        if (checkpoints is not null)
        {
            var (ending, why) = reachedDeadline ? ("deadline", continuesAs is { } next ? $"the job's timeout; continued as segment {next}" : "the job's timeout")
                : outcome.Stopped ? ("stopped", "cancel, timeout or runner shutdown")
                : outcome.ExitCode == 0 ? ("success", "the trainer exited 0")
                : ("failed", $"the trainer exited {outcome.ExitCode}");
            await RecordEndAsync(lifecycle, job, ending, why);
        }

        if (streamViews is not null && DatasetStreams.ReadStatus(streamViews) is { } stream)
        {
            var seconds = ((stream.EndedAt ?? DateTimeOffset.UtcNow) - stream.StartedAt).TotalSeconds;
            log.WriteLine($"Dataset stream: {stream.Done} of {stream.Total} objects in after the job started, {stream.Bytes / 1048576.0:0.0} MiB fetched in {seconds:0.0} s ({stream.Bytes / 1048576.0 / Math.Max(seconds, 0.001):0.0} MiB/s){(stream.EndReason is { } why ? $"; {why}" : "; still streaming")}.");
            if (DatasetStreams.ReadWaits(JobWorkspace.For(config, streamingJob).BuildsHostDir) is var (waited, waits))
                log.WriteLine($"  The job waited on data {waited:0.0} s in all ({waits} waits, as its loader recorded them in ${DatasetStreams.WaitsVariable}).");
            // The reader stopped because an object never came: the store's failure, not the job's.
            if (outcome.ExitCode != 0 && stream.Failed is { } failure)
                throw new SystemFailureException($"the dataset stream failed, and stage '{stageName}' ended with exit code {outcome.ExitCode}: {failure}");
        }
        // A continued job must not succeed, whatever the trainer's exit code: later stages of the
        // pipeline would start on an unfinished model. The retry replaces it in the pipeline.
        if (continuesAs is { } segment)
            throw new BuildFailureException($"the run reached this job's deadline; once the job has ended, it is retried through the GitLab API as segment {segment}, which resumes from the newest checkpoint.", Math.Max(outcome.ExitCode, 1));
        if (outcome.ExitCode == 0)
            return;
        // The stage server replied, so the container was alive when the script ended: a non-zero
        // code is the script's own (an OOM-killed trainer's 137 included), never the host's.
        var exitCode = Math.Max(outcome.ExitCode, 1);
        throw new BuildFailureException(outcome.Stopped ? $"stage '{stageName}' was stopped (exit code {exitCode})." : "", exitCode);
    }

    /// <summary>
    /// The "GPU usage" section: the samples of the job that holds the GPUs (the adopted
    /// training's, for a job that adopted one), from the job's start to now; and a loud line for
    /// each GPU that stayed idle in most of them. The samples go to the project directory, for
    /// `artifacts:`, and a checkpointed run keeps them in the store beside its history.
    /// </summary>
    /// <param name="gpuJob">The job whose container holds the GPUs and mounts the builds directory.</param>
    private async Task ReportGpuUsageAsync(JobIdentity gpuJob, string? runKey, CheckpointLifecycle lifecycle, string? projectDir)
    {
        var (csv, samples) = GpuTelemetryFiles.Read(GpuTelemetryFiles.SamplesFile(config.StateDir, gpuJob.JobId));
        if (samples.Count == 0)
            return;
        // Whole lines only: the sampler may be halfway through appending one.
        csv = csv.AsSpan(0, csv.AsSpan().LastIndexOf((byte)'\n') + 1).ToArray();
        if (runKey is not null)
            await lifecycle.RecordGpuSamplesAsync(runKey, gpuJob.JobId, csv, CancellationToken.None);
        var copied = CopySamplesToProject(gpuJob, projectDir, csv);
        var telemetry = config.Telemetry;
        var report = GpuUsageReport.From(samples, telemetry.GpuSampleInterval, telemetry.IdleUtilizationPercent);
        using (JobLogSection.Start(log, "gpu_executor_gpu_usage", "GPU usage", collapsed: true))
        {
            foreach (var line in report.TableLines())
                log.WriteLine(line);
            log.WriteLine(copied);
        }
        foreach (var idle in report.Idle)
            log.WriteLine(GpuUsageReport.IdleWarning(idle, telemetry.IdleUtilizationPercent));
    }

    /// <summary>
    /// The step's whole log goes to the run in the store; and where the job log did not show all
    /// of it, one line says how much there was, how much was held back, and where it is. A step
    /// the job log showed whole gets no line: the job log is its whole log.
    /// </summary>
    private async Task ReportStepLogAsync(StepLogSummary summary, JobIdentity job, string stageName, string? runKey, CheckpointLifecycle lifecycle)
    {
        var stored = "";
        // A host copy that stopped part way is not what the step printed: the store gets none.
        if (runKey is not null && summary.Incomplete is null)
        {
            await lifecycle.RecordStepLogAsync(runKey, job.JobId, stageName, summary.Path, CancellationToken.None);
            stored = $"; the store keeps it as runs/{runKey}/{CheckpointLifecycle.StepLogRecordName(job.JobId, stageName)}";
        }
        if (summary.Incomplete is { } why)
            log.WriteLine($"WARNING: the whole log of {stageName} is incomplete on this host: {why}.");
        if (summary.HeldBackLines == 0)
            return;
        log.WriteLine($"Whole log of {stageName}: {Sizes.Describe(summary.Bytes)}, {summary.Lines.ToString("N0", CultureInfo.InvariantCulture)} lines; " +
                      $"the job log showed {Sizes.Describe(summary.ShownBytes)} and held back {summary.HeldBackLines.ToString("N0", CultureInfo.InvariantCulture)} lines ({Sizes.Describe(summary.HeldBackBytes)}). " +
                      $"`gpu-executor logs {job.JobId}` on host {config.HostName} prints it ({summary.Path}){stored}.");
    }

    /// <summary>A step's whole log, or none where state_dir cannot hold one (a full disk): the step runs all the same, with the job log as the runner would keep it.</summary>
    private StepOutputLog? StartStepLog(JobIdentity job, string stageName, Stream stdout, Stream stderr, string whereTheLogIs)
    {
        try
        {
            return StepOutputLog.Start(config.Logs, config.StateDir, job.JobId, stageName, stdout, stderr, whereTheLogIs);
        }
        catch (Exception error) when (error is IOException or UnauthorizedAccessException)
        {
            log.WriteLine($"WARNING: the whole log of {stageName} cannot be kept on this host ({error.Message}); the job log gets the output as the runner keeps it.");
            return null;
        }
    }

    /// <summary>
    /// The samples at $CI_PROJECT_DIR/.gpu-executor/gpu-usage.csv. The project directory belongs
    /// to the job, which may have planted symlinks in it: the write follows none.
    /// </summary>
    /// <returns>The job log's line saying where the file is, or why it is not there.</returns>
    private string CopySamplesToProject(JobIdentity gpuJob, string? projectDir, byte[] csv)
    {
        var builds = JobWorkspace.For(config, gpuJob).BuildsHostDir;
        var directory = GpuTelemetryFiles.ProjectFile.Split('/');
        var why = JobWorkspace.ProjectDirectoryBelowBuilds(config, projectDir) is { } project
            ? NoFollowFiles.ReplaceFileBeneath(builds, [.. project, .. directory[..^1]], directory[^1], csv)
            : $"$CI_PROJECT_DIR ({projectDir ?? "unset"}) is not below {config.Builds.ContainerDir}";
        return why is null
            ? $"Samples: $CI_PROJECT_DIR/{GpuTelemetryFiles.ProjectFile} (list it under artifacts:paths to keep it)."
            : $"Samples not copied to $CI_PROJECT_DIR/{GpuTelemetryFiles.ProjectFile}: {why}.";
    }

    private static Task RecordEndAsync(CheckpointLifecycle lifecycle, JobIdentity job, string ending, string why)
    {
        var endedAt = DateTimeOffset.UtcNow;
        return lifecycle.RecordTrainingAsync(job, segment => segment with { EndedAt = endedAt, Outcome = ending, Why = why }, CancellationToken.None);
    }

    /// <summary>A time the job's containers carry as a label: its deadline (prepare's start plus the job's timeout), or prepare's start.</summary>
    private async Task<DateTimeOffset?> ContainerTimeAsync(JobIdentity job, Func<IReadOnlyDictionary<string, string>, DateTimeOffset?> read, CancellationToken cancellationToken)
    {
        var containers = await driver.FindAsync(JobLabels.SelectJob(job.JobId), cancellationToken);
        return containers.Select(found => read(found.Labels)).FirstOrDefault(time => time is not null);
    }
}
