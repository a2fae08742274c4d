using GpuExecutor.Checkpoints;
using GpuExecutor.Configuration;
using GpuExecutor.Containers;
using GpuExecutor.Datasets;
using GpuExecutor.Jobs;

namespace GpuExecutor.Workflows;

/// <summary>
/// `gc`: the janitor for what cleanup never got to (runner killed, host rebooted). A managed
/// container is long gone once its job's deadline (start + timeout, on its labels) plus
/// cleanup.gc_grace_seconds has passed: the runner would have killed the job by then.
/// </summary>
public sealed class CollectGarbage(ExecutorConfig config, IContainerDriver driver)
{
    /// <summary>For containers without a readable deadline label: older than this is long gone.</summary>
    private static readonly TimeSpan FallbackMaximumAge = TimeSpan.FromDays(31);

    /// <summary>Removes what is long gone; says each removal on <paramref name="stdout"/>.</summary>
    /// <param name="onlyJob">Only what this job left behind (`gc --job`): the daemon's containers are every executor's on the host, and an admin may want one job's leftovers gone without touching the rest.</param>
    public async Task RunAsync(TextWriter stdout, CancellationToken cancellationToken, long? onlyJob = null)
    {
        var now = DateTimeOffset.UtcNow;
        bool Concerns(long jobId) => onlyJob is null || onlyJob == jobId;
        var managed = await driver.FindAsync(onlyJob is { } job ? JobLabels.SelectJob(job) : JobLabels.SelectManaged(), cancellationToken);

        // A container another job adopted (re-attach) lives to that job's deadline, which its
        // labels, written for the job that died, do not know.
        var adoptions = Reattach.ReadAllAdoptions(config.StateDir);
        var adoptedUntil = adoptions
            .GroupBy(pair => pair.Adopted.Container, StringComparer.Ordinal)
            .ToDictionary(group => group.Key, group => group.Max(pair => pair.Adopted.Deadline), StringComparer.Ordinal);

        var liveJobIds = new HashSet<long>();
        var removed = 0;
        foreach (var container in managed)
        {
            var deadline = JobLabels.ReadDeadline(container.Labels) ?? container.Created + FallbackMaximumAge;
            if (adoptedUntil.TryGetValue(container.Name, out var adoptedDeadline) && adoptedDeadline > deadline)
                deadline = adoptedDeadline;
            var expiry = deadline + config.Cleanup.GcGracePeriod;
            long? jobId = container.Labels.TryGetValue(JobLabels.JobId, out var jobIdText) && long.TryParse(jobIdText, out var parsed) ? parsed : null;
            if (now < expiry)
            {
                if (jobId is { } live)
                    liveJobIds.Add(live);
                continue;
            }
            // A `run` may outlive the deadline by its stop's grace and final commit (the runner
            // calls cleanup then, which waits for it); with a short gc_grace_seconds, removing the
            // container under it would kill a trainer writing its last checkpoint.
            if (jobId is { } stopping && RunLease.IsHeld(config.StateDir, stopping))
            {
                liveJobIds.Add(stopping);
                stdout.WriteLine($"kept container {container.Name}: run of job {stopping} is still stopping its stage or committing");
                continue;
            }
            await driver.RemoveAsync(container.Id, cancellationToken);
            stdout.WriteLine($"removed container {container.Name} (job deadline passed {now - expiry + config.Cleanup.GcGracePeriod:g} ago)");
            removed++;
        }

        // Builds directories whose job has no container left and that nobody touched for the grace period.
        if (Directory.Exists(config.Builds.HostDir))
        {
            foreach (var directory in new DirectoryInfo(config.Builds.HostDir).EnumerateDirectories())
            {
                if (JobWorkspace.JobIdOfDirectoryName(directory.Name) is not { } jobId || liveJobIds.Contains(jobId) || !Concerns(jobId))
                    continue;
                if (now - directory.LastWriteTimeUtc < config.Cleanup.GcGracePeriod)
                    continue;
                try
                {
                    directory.Delete(recursive: true);
                    stdout.WriteLine($"removed builds directory {directory.FullName}");
                    removed++;
                }
                catch (Exception error) when (error is IOException or UnauthorizedAccessException)
                {
                    // One stubborn directory must not stop the janitor; the next run retries it.
                    stdout.WriteLine($"could not remove builds directory {directory.FullName}: {error.Message}");
                }
            }
        }

        // Dataset views of jobs that are gone: their lists of objects in use would otherwise pin
        // those objects against eviction forever.
        var cache = new DatasetCache(config.StateDir, _ => { });
        foreach (var view in cache.Views())
        {
            if (JobWorkspace.JobIdOfDirectoryName(view) is not { } jobId || jobId == 0 || liveJobIds.Contains(jobId) || !Concerns(jobId))
                continue;
            var directory = new DirectoryInfo(cache.ViewsOf(jobId));
            if (now - directory.LastWriteTimeUtc < config.Cleanup.GcGracePeriod)
                continue;
            cache.RemoveViews(jobId);
            stdout.WriteLine($"removed dataset views of job {jobId}");
            removed++;
        }

        // Whole step logs kept past logs.host_keep_days (a checkpointed run's are in the store too).
        var logsRoot = JobLog.StepLogFiles.RootOf(config.StateDir);
        if (Directory.Exists(logsRoot))
        {
            foreach (var directory in new DirectoryInfo(logsRoot).EnumerateDirectories())
            {
                if (JobWorkspace.JobIdOfDirectoryName(directory.Name) is not { } jobId || liveJobIds.Contains(jobId) || !Concerns(jobId))
                    continue;
                if (now - directory.LastWriteTimeUtc < config.Logs.HostKeep)
                    continue;
                directory.Delete(recursive: true);
                stdout.WriteLine($"removed the step logs of job {jobId} (logs.host_keep_days)");
                removed++;
            }
        }

        // Adoptions whose adopting job is long past its deadline: nothing follows them any more.
        foreach (var (file, adopted) in adoptions)
        {
            if (now < adopted.Deadline + config.Cleanup.GcGracePeriod || !Concerns(adopted.JobId))
                continue;
            File.Delete(file);
            stdout.WriteLine($"removed the record of job {adopted.JobId}'s adopted training ({Path.GetFileName(file)})");
            removed++;
        }

        // Agents that outlived their job (they end by themselves; this is the net under that).
        foreach (var orphan in OrphanedAgents.Find(config.StateDir, config.Cleanup.GcGracePeriod, now).Where(orphan => Concerns(orphan.JobId)))
        {
            OrphanedAgents.Stop(orphan);
            stdout.WriteLine($"stopped the checkpoint agent of job {orphan.JobId} (run {orphan.RunKey}, pid {orphan.Pid}): {orphan.Why}");
            removed++;
        }

        stdout.WriteLine($"gc: removed {removed}, kept {liveJobIds.Count} live job(s).");
    }
}
