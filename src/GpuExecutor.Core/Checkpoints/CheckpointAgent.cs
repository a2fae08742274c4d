using GpuExecutor.Containers;
using GpuExecutor.HostFiles;
using GpuExecutor.Jobs;
using GpuExecutor.Outcomes;
using GpuExecutor.Storage;
using GpuExecutor.Clocks;

namespace GpuExecutor.Checkpoints;

/// <summary>When the agent takes a checkpoint as complete, and how it paces itself.</summary>
public sealed record AgentTiming(TimeSpan QuietPeriod, TimeSpan PollInterval, int KeepGenerations)
{
    /// <summary>After the container is gone, how long a failing commit is retried before the agent gives up.</summary>
    public TimeSpan GiveUpAfterJob { get; init; } = TimeSpan.FromMinutes(10);

    /// <summary>A daemon that has not answered this long counts as gone with the container (checkpoints.agent_daemon_lost_seconds).</summary>
    public TimeSpan DaemonLostAfter { get; init; } = TimeSpan.FromMinutes(10);

    /// <summary>Past the job's deadline by this much, the agent ends whatever it is doing (cleanup.gc_grace_seconds).</summary>
    public TimeSpan EndAfterDeadline { get; init; } = TimeSpan.FromHours(1);

    /// <summary>When the run's lease was taken: the signal the training gets first (run.stop_signal), and how long before its container goes (run.stop_grace_seconds).</summary>
    public string StopSignal { get; init; } = "TERM";

    public TimeSpan StopGrace { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>How long before the job's deadline a training that no runner follows any more is asked to stop (checkpoints.deadline_margin_seconds).</summary>
    public TimeSpan StopBeforeDeadline { get; init; } = TimeSpan.FromMinutes(5);
}

/// <summary>
/// Watches one job's checkpoint directory and commits each complete checkpoint, outside the
/// training process and outside any executor process: it is started detached by prepare and
/// lives until the job's container is gone and its final commit is done (or has failed for
/// <see cref="AgentTiming.GiveUpAfterJob"/>). It always ends: a Docker daemon that stays
/// unreachable for <see cref="AgentTiming.DaemonLostAfter"/> counts as a container that is gone,
/// and the job's deadline (from the container's labels, or a later one where another job adopted
/// the training) plus <see cref="AgentTiming.EndAfterDeadline"/> is a hard end. Its log says why
/// it ended.
///
/// A training whose runner died (no `run` follows it, and no job adopted it) would otherwise train
/// on past its job's deadline, holding the run's lease while the job's retry on another host
/// waits: the agent stops it as `run` would have, with the stop signal
/// <see cref="AgentTiming.StopBeforeDeadline"/> before the deadline, commits what it saves, and
/// removes its container after the stop grace.
///
/// A checkpoint is complete when the trainer creates the marker file, or, for a trainer that
/// never does, when the directory has been quiet for the quiet period. Once a marker has been
/// seen, only markers count: that trainer says when it is done, and a quiet pause mid-write must
/// not be taken for one. A marker vouches only for what was there when it was made: a file
/// changed after it belongs to the next checkpoint, still being written, and waits for the next
/// marker. The quiet rule holds only while the writer lives or after it exited by itself (`run`
/// said so): once it was SIGKILLed, or the container went away without that word, a quiet
/// directory may hold a torn file, and changes since the last commit are left out, saying why.
/// </summary>
public sealed class CheckpointAgent(
    long jobId,
    string container,
    IContainerDriver driver,
    CheckpointRepository repository,
    RunDirectories directories,
    AgentTiming timing,
    Action<string> log,
    Func<CommitStep, Task>? afterStep = null,
    Func<DateTimeOffset?>? adoptedUntil = null,
    TrainingLease? lease = null,
    Func<bool>? nobodyFollows = null,
    Func<long?, Task>? afterCommitAttempt = null)
{
    private CheckpointAgentStatus _status = new(jobId, null, null, 0, 0, null, null, 0, false) { Pid = Environment.ProcessId, StartedAt = DateTimeOffset.UtcNow };

    private enum ContainerPresence { Running, Gone, DaemonUnreachable }

    /// <summary>The container's labels (its deadline) are read once, on the first look that reaches the daemon.</summary>
    private bool _labelsRead;

    /// <summary>The job's deadline from its labels, which moves with a jump of the wall clock.</summary>
    private HostDeadline? _deadline;

    /// <summary>The job's deadline in the wall clock's present terms (from the status of a predecessor that died, until the labels are read).</summary>
    private DateTimeOffset? Deadline => _deadline?.Current ?? _status.CurrentDeadline;

    public async Task RunAsync(CancellationToken cancellationToken)
    {
        Directory.CreateDirectory(directories.Snapshots);
        var snapshotter = new CheckpointSnapshotter(directories.Work, directories.Snapshots);
        // What restore put there is committed already; for an agent started again after this
        // job's first one died, what that one last committed is, and the rest is not.
        var committed = snapshotter.Fingerprint();
        if (ReadStatus(directories, jobId) is { Exited: false, CommittedGeneration: { } before } died)
        {
            _status = died with { Pid = Environment.ProcessId, StartedAt = died.StartedAt ?? DateTimeOffset.UtcNow };
            if (LocalCommit.Read(directories) is { } local && local.Generation == before)
                committed = new DirectoryFingerprint(local.Files.OrderBy(file => file.Path, StringComparer.Ordinal).Select(file => (file.Path, file.Size, file.ModifiedNanoseconds)).ToList());
            log($"started again after this job's agent died; generation {before} is the newest it committed");
        }
        var seen = committed;
        var changedAt = Monotonic.Now;
        var markerMode = false;
        CheckpointSnapshot? pending = null;
        DirectoryFingerprint? pendingFingerprint = null;
        var retryAt = TimeSpan.MinValue;
        var failures = 0;
        TimeSpan? goneAt = null;
        TimeSpan? unreachableSince = null;
        string endReason = "";
        var hardEnd = false;
        var polls = 0L;
        var renewLeaseAt = TimeSpan.MinValue;
        TimeSpan? unfollowedStopAt = null;
        WriteStatus();

        while (true)
        {
            if (lease is not null && Monotonic.Now >= renewLeaseAt)
            {
                renewLeaseAt = Monotonic.Now + lease.RenewEvery;
                if (await LeaseLostAsync(lease, sameHostTakerWaits: goneAt is not null, cancellationToken) is { } taker)
                {
                    await StopTrainingForAsync(taker, pending, cancellationToken);
                    return;
                }
            }

            if (goneAt is null)
            {
                switch (await ContainerPresenceAsync(cancellationToken))
                {
                    case ContainerPresence.Gone:
                        goneAt = Monotonic.Now;
                        endReason = $"the job's container {container} is gone";
                        break;
                    case ContainerPresence.DaemonUnreachable:
                        if (unreachableSince is null)
                            log($"the Docker daemon does not answer; commits go on, and after {timing.DaemonLostAfter.TotalSeconds:0} s without an answer the container counts as gone (checkpoints.agent_daemon_lost_seconds)");
                        unreachableSince ??= Monotonic.Now;
                        if (Monotonic.Now - unreachableSince >= timing.DaemonLostAfter)
                        {
                            goneAt = Monotonic.Now;
                            endReason = $"the Docker daemon has not answered for {(Monotonic.Now - unreachableSince.Value).TotalSeconds:0} s (checkpoints.agent_daemon_lost_seconds), so the container counts as gone";
                        }
                        break;
                    default:
                        if (unreachableSince is not null)
                            log($"the Docker daemon answers again after {(Monotonic.Now - unreachableSince.Value).TotalSeconds:0} s; the container is still running");
                        unreachableSince = null;
                        if (unfollowedStopAt is null && UnfollowedPastStopTime())
                        {
                            log($"no runner follows the training in {container} and its job's deadline is {timing.StopBeforeDeadline.TotalSeconds:0} s away or less: it is asked to stop, as `run` would have (checkpoints.deadline_margin_seconds), so that it saves and the run's next job can take over");
                            unfollowedStopAt = Monotonic.Now + (await SignalTrainingAsync(cancellationToken) ? timing.StopGrace : TimeSpan.Zero);
                            endReason = "no runner followed the training at its job's deadline; it was stopped after its save";
                        }
                        else if (unfollowedStopAt is { } stopAt && Monotonic.Now >= stopAt)
                        {
                            // Commits go on until here: what the training saved on the signal is taken like any checkpoint.
                            NoteWriterKilled(directories, jobId);
                            await RemoveContainerAsync(cancellationToken);
                            goneAt = Monotonic.Now;
                        }
                        break;
                }
            }
            if (EndsAt() is { } end && DateTimeOffset.UtcNow >= end)
            {
                // A hard end: whatever the daemon says, and even with a commit still failing.
                goneAt ??= Monotonic.Now;
                endReason = $"the job's deadline plus cleanup.gc_grace_seconds passed at {end:yyyy-MM-dd HH:mm:ss} UTC";
                hardEnd = true;
            }
            var finalRequest = ReadFinalPassRequest(directories, jobId);
            var finalPass = goneAt is not null || finalRequest > _status.FinalPassDone;

            var fingerprint = snapshotter.Fingerprint();
            if (!fingerprint.SameAs(seen))
            {
                seen = fingerprint;
                changedAt = Monotonic.Now;
            }
            var markerMadeAt = snapshotter.MarkerModifiedNanoseconds;
            var marker = markerMadeAt is not null;
            markerMode |= marker;
            var changed = !fingerprint.IsEmpty && !fingerprint.SameAs(committed);
            var changedAfterMarker = marker && fingerprint.Entries.Any(entry => entry.ModifiedNanoseconds > markerMadeAt);
            var writerKilled = File.Exists(directories.WriterKilledNotice(jobId));
            var writerExitedByItself = finalRequest > 0 && !writerKilled;
            var quietRuleHolds = !markerMode && changed && !writerKilled
                && ((finalPass && writerExitedByItself) || (goneAt is null && timing.QuietPeriod > TimeSpan.Zero && Monotonic.Now - changedAt >= timing.QuietPeriod));
            var due = (marker && !changedAfterMarker) || quietRuleHolds;

            if (due || (pending is not null && Monotonic.Now >= retryAt))
            {
                if (due)
                {
                    // A newer complete checkpoint replaces one whose commit is still failing.
                    var taken = snapshotter.Take();
                    if (taken is not null)
                    {
                        if (pending is not null && Directory.Exists(pending.Directory))
                            Directory.Delete(pending.Directory, recursive: true);
                        pending = taken;
                        pendingFingerprint = new DirectoryFingerprint(taken.Files.Select(file => (file.Path, file.Size, file.SourceModifiedNanoseconds)).ToList());
                        if (marker)
                            snapshotter.RemoveMarker();
                    }
                }
                if (pending is not null)
                {
                    try
                    {
                        var result = await repository.CommitAsync(pending, jobId, timing.KeepGenerations, afterStep, cancellationToken);
                        snapshotter.Committed(pending);
                        LocalCommit.Of(result.Generation, pending).Write(directories);
                        committed = pendingFingerprint!;
                        log($"committed generation {result.Generation}: {pending.Files.Count} files, {result.UploadedBytes} of {result.TotalBytes} bytes uploaded");
                        _status = _status with { CommittedGeneration = result.Generation, CommittedAt = DateTimeOffset.UtcNow, UploadedBytes = result.UploadedBytes, TotalBytes = result.TotalBytes, FailingSince = null, LastError = null, CommittedFiles = pending.Files.Count, FinalPassNote = null };
                        pending = null;
                        failures = 0;
                        if (afterCommitAttempt is not null)
                            await afterCommitAttempt(result.UploadedBytes);
                    }
                    catch (Exception error) when (error is SystemFailureException or IOException or BuildFailureException && !cancellationToken.IsCancellationRequested)
                    {
                        failures++;
                        // Back off up to a minute between attempts; the trainer goes on meanwhile.
                        var backOff = TimeSpan.FromSeconds(Math.Min(60, 2 << Math.Min(failures, 5)));
                        retryAt = Monotonic.Now + backOff;
                        _status = _status with { FailingSince = _status.FailingSince ?? DateTimeOffset.UtcNow, LastError = error.Message };
                        log($"commit failed (attempt {failures}), retrying in {backOff.TotalSeconds:0} s: {error.Message}");
                        if (afterCommitAttempt is not null)
                            await afterCommitAttempt(null);
                    }
                }
                WriteStatus();
            }

            if (finalPass && !due && changed && pending is null && _status.FinalPassNote is null)
            {
                var note = UncommittedReason(markerMode, changedAfterMarker, writerKilled);
                log($"final pass: {note}");
                _status = _status with { FinalPassNote = note };
                WriteStatus();
            }
            if (finalRequest > _status.FinalPassDone && (pending is null || failures > 0))
            {
                _status = _status with { FinalPassDone = finalRequest };
                WriteStatus();
            }
            if (goneAt is not null && (pending is null || Monotonic.Now - goneAt > timing.GiveUpAfterJob || hardEnd))
            {
                log($"agent done: {endReason}" + (pending is null ? "" : $"; the last complete checkpoint was NOT committed ({_status.LastError})"));
                await ReleaseLeaseAsync(cancellationToken);
                _status = _status with { Exited = true, EndReason = endReason };
                WriteStatus();
                return;
            }
            if (++polls % CollectEveryPolls == 0)
                CollectGarbage();
            await Task.Delay(timing.PollInterval, cancellationToken);
        }
    }

    /// <summary>
    /// Renews the run's lease; returns who holds it when this job no longer does. A taker on this
    /// host once the container is gone waits for this agent's lock before it restores, so the
    /// final commit may still go ahead: it is not a loss then.
    /// </summary>
    private async Task<TrainingLeaseRecord?> LeaseLostAsync(TrainingLease held, bool sameHostTakerWaits, CancellationToken cancellationToken)
    {
        var (outcome, holder) = await held.RenewAsync(jobId, container, cancellationToken);
        if (outcome != LeaseRenewal.Lost)
            return null;
        if (sameHostTakerWaits && holder!.Host == held.Host)
            return null;
        return holder;
    }

    /// <summary>
    /// Another job took the run (this host was cut off from the store past the lease's expiry, or
    /// an admin moved it): committing on would let two trainers write one run. The pending
    /// checkpoint is dropped, the training is asked to stop (the stop signal, through the
    /// container's stage server, as a stop from `run` would), and after the grace period the
    /// job's container is removed, training and all.
    /// </summary>
    private async Task StopTrainingForAsync(TrainingLeaseRecord taker, CheckpointSnapshot? pending, CancellationToken cancellationToken)
    {
        var reason = $"the run's lease was taken by {taker.Holder} at {taker.AcquiredAt.UtcDateTime:HH:mm:ss} UTC (this job's lease had expired unrenewed)";
        log($"LEASE LOST: {reason}. This agent commits nothing more and stops the training in {container}, so that two trainers never write one run.");
        _status = _status with { LeaseLostTo = taker.Holder, LastError = null, Exited = true, EndReason = reason };
        // Now, so that a `run` still following the training says why before the container goes.
        WriteStatus();
        if (pending is not null && Directory.Exists(pending.Directory))
            Directory.Delete(pending.Directory, recursive: true);
        if (await SignalTrainingAsync(cancellationToken))
            await Task.Delay(timing.StopGrace, cancellationToken);
        await RemoveContainerAsync(cancellationToken);
        log($"agent done: {reason}");
        WriteStatus();
    }

    /// <summary>The stop signal to every process of the training's stage, through the container's stage server, as `run`'s stop sends it; false when it could not be sent.</summary>
    private async Task<bool> SignalTrainingAsync(CancellationToken cancellationToken)
    {
        try
        {
            using var attachTimeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            attachTimeout.CancelAfter(TimeSpan.FromSeconds(10));
            using var attachment = await driver.AttachAsync(container, attachTimeout.Token);
            // The stage server signals every process of the stage; a signal request takes no reply.
            await attachment.WriteAsync(StageServer.SignalRequest(StageServer.NewNonce(), timing.StopSignal), attachTimeout.Token);
            log($"sent SIG{timing.StopSignal} to the training's processes; its container goes in {timing.StopGrace.TotalSeconds:0} s");
            return true;
        }
        catch (Exception error) when (error is ContainerEngineException or OperationCanceledException && !cancellationToken.IsCancellationRequested)
        {
            log($"the training could not be signalled ({error.Message}); its container goes now");
            return false;
        }
    }

    private async Task RemoveContainerAsync(CancellationToken cancellationToken)
    {
        try
        {
            await driver.RemoveAsync(container, cancellationToken);
        }
        catch (ContainerEngineException error)
        {
            log($"the training's container could not be removed ({error.Message}); gc removes it after its deadline");
        }
    }

    /// <summary>
    /// The job's deadline (or a later adopting job's) is within the stop margin, and the training
    /// is one that a `run` started and no longer follows. Adoptions are read only near the
    /// deadline: most agents never need to.
    /// </summary>
    private bool UnfollowedPastStopTime()
    {
        if (nobodyFollows is null || Deadline is not { } own || DateTimeOffset.UtcNow < own - timing.StopBeforeDeadline)
            return false;
        var deadline = adoptedUntil?.Invoke() is { } adopted && adopted > own ? adopted : own;
        return DateTimeOffset.UtcNow >= deadline - timing.StopBeforeDeadline && nobodyFollows();
    }

    private async Task ReleaseLeaseAsync(CancellationToken cancellationToken)
    {
        if (lease is null)
            return;
        try
        {
            await lease.ReleaseAsync(jobId, cancellationToken);
        }
        catch (ObjectStoreException error)
        {
            // It expires by itself; the run's next job on another host waits for that.
            log($"the run's lease could not be released: {error.Message}");
        }
    }

    /// <summary>How many polls between the agent's own garbage collections (about a minute at the default interval).</summary>
    private const int CollectEveryPolls = 60;

    /// <summary>
    /// The GC sizes its first generation from the CPU's L3 cache: on hosts with hundreds of MiB of
    /// it (300 MiB on the development VM; large EPYC GPU hosts alike) a process that allocates a
    /// few dozen KiB a second, as the agent does, would not collect for hours, and its RSS would
    /// climb by all that garbage (3 MiB a minute, measured). The agent lives as long as its
    /// training, so it collects on a fixed beat: its memory stays flat. Its heap is small, so a
    /// collection costs about a millisecond.
    /// </summary>
    private static void CollectGarbage()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
    }

    /// <summary>Why the final pass leaves the directory's changes since the last commit out.</summary>
    private string UncommittedReason(bool markerMode, bool changedAfterMarker, bool writerKilled)
    {
        var since = _status.CommittedGeneration is { } generation
            ? $"the changes since generation {generation.ToString(System.Globalization.CultureInfo.InvariantCulture)} were not committed"
            : "the checkpoint directory was not committed";
        if (changedAfterMarker)
            return $"{since}: files changed after the trainer's last completion marker belong to a checkpoint it did not finish";
        if (markerMode)
            return $"{since}: the trainer created no completion marker for them";
        return writerKilled
            ? $"{since}: the trainer was SIGKILLed after the grace period, so a file may be torn, and it never creates a completion marker"
            : $"{since}: the container stopped without its stage exiting by itself, so a file may be torn, and the trainer never creates a completion marker";
    }

    private async Task<ContainerPresence> ContainerPresenceAsync(CancellationToken cancellationToken)
    {
        try
        {
            var state = await driver.InspectStateAsync(container, cancellationToken);
            if (state is not { Running: true })
                return ContainerPresence.Gone;
            if (!_labelsRead && (await driver.FindAsync(JobLabels.SelectJob(jobId), cancellationToken)).FirstOrDefault(found => found.Name == container) is { } labelled)
            {
                _labelsRead = true;
                _deadline = JobLabels.ReadHostDeadline(labelled.Labels);
                _status = _status with { Deadline = _deadline?.WallTime, DeadlineOnBootClock = _deadline?.OnBootClock?.ToString() };
                WriteStatus();
            }
            return ContainerPresence.Running;
        }
        catch (ContainerEngineException)
        {
            // A daemon that does not answer (restarting, say) is not a container that stopped,
            // until it has not answered for long enough.
            return ContainerPresence.DaemonUnreachable;
        }
    }

    /// <summary>
    /// The hard end: the job's deadline plus the grace, or an adopting job's, which may be later.
    /// The adoptions are read only once the job's own end has come (or where it is unknown): most
    /// agents never need to.
    /// </summary>
    private DateTimeOffset? EndsAt()
    {
        var own = Deadline + timing.EndAfterDeadline;
        if (own is not null && DateTimeOffset.UtcNow < own)
            return own;
        return adoptedUntil?.Invoke() + timing.EndAfterDeadline is { } adopted && (own is null || adopted > own) ? adopted : own;
    }

    /// <summary>The number of the newest final pass that `run` asked the agent of <paramref name="jobId"/> for; 0 when none.</summary>
    public static long ReadFinalPassRequest(RunDirectories directories, long jobId)
    {
        try
        {
            return File.Exists(directories.FinalPassRequest(jobId)) ? long.Parse(File.ReadAllText(directories.FinalPassRequest(jobId)).Trim(), System.Globalization.CultureInfo.InvariantCulture) : 0;
        }
        catch (Exception error) when (error is IOException or FormatException or OverflowException)
        {
            return 0;
        }
    }

    /// <summary>Written by `run` right before it SIGKILLs the stage's processes (see <see cref="RunDirectories.WriterKilledNotice"/>).</summary>
    public static void NoteWriterKilled(RunDirectories directories, long jobId) =>
        File.WriteAllText(directories.WriterKilledNotice(jobId), DateTimeOffset.UtcNow.ToString("O", System.Globalization.CultureInfo.InvariantCulture));

    private void WriteStatus() =>
        StateFiles.Write(directories.AgentStatus(jobId), _status, CheckpointJsonContext.Default.CheckpointAgentStatus);

    public static CheckpointAgentStatus? ReadStatus(RunDirectories directories, long jobId) =>
        StateFiles.Read(directories.AgentStatus(jobId), CheckpointJsonContext.Default.CheckpointAgentStatus);
}
