using System.Globalization;
using GpuExecutor.Containers;

namespace GpuExecutor.Stages;

/// <summary>
/// Tells a stage that the job itself brought down from one the host did, for a build failure
/// that names the cause. A job must never pass its own doing off as a system failure (which
/// GitLab treats as the infrastructure's, and retries), and "exit code 137" alone does not say
/// whether the kernel ran out of memory, a fork bomb hit the process limit, or the script
/// killed everything in its container. Docker's events and the container's cgroup say which.
/// </summary>
public static class StageFaults
{
    /// <summary>How long a container that announced its stop gets to end before its events are read.</summary>
    private static readonly TimeSpan StopSettleWait = TimeSpan.FromSeconds(10);

    /// <summary>The job's own fault, said for the job log; null when the stage's outcome needs no other word, or the host is to blame.</summary>
    /// <param name="writableDirectories">The job's writable directories on the host, by what the job calls them ("builds directory", "checkpoint directory"): a failure while one's filesystem is full says so.</param>
    public static async Task<string?> ExplainAsync(IContainerDriver driver, string container, string stageName, DateTimeOffset stageStart, StageResult result, CancellationToken cancellationToken, IReadOnlyList<(string What, string HostPath)>? writableDirectories = null)
    {
        if (result.Stopped || (result.ExitCode == 0 && !result.StoppedFromOutside))
            return null;
        try
        {
            if (result.StoppedFromOutside)
            {
                // The server replies before it exits: the container's end, and its event, follow.
                using var settle = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
                settle.CancelAfter(StopSettleWait);
                try
                {
                    await driver.WaitUntilStoppedAsync(container, settle.Token);
                }
                catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
                {
                    return null;
                }
            }
            var incidents = await driver.IncidentsSinceAsync(container, stageStart, cancellationToken);
            return Explain(stageName, result, incidents)
                ?? (result.StoppedFromOutside ? null : (writableDirectories ?? []).Select(directory => FullDisk(stageName, directory.What, directory.HostPath)).FirstOrDefault(fault => fault is not null));
        }
        catch (ContainerEngineException)
        {
            // The daemon cannot say: no claim that the job is to blame.
            return null;
        }
    }

    /// <summary>The decision, from what Docker recorded.</summary>
    public static string? Explain(string stageName, StageResult result, ContainerIncidents incidents)
    {
        if (incidents.OutOfMemoryKills > 0)
            return OutOfMemory(incidents);
        if (result.WrapperKilled)
            return $"the job's script killed the executor's process that ran stage '{stageName}' with signal {result.ExitCode - StageServer.KilledBySignal} (it signalled every process in its container, as `kill -9 -1` does): the stage's own exit code is lost, and its remaining processes were stopped. A job may signal only the processes it started.";
        if (result.StoppedFromOutside)
        {
            // A daemon that restarted has forgotten the container's events: then nobody can say
            // who stopped it, and the host's failure is the safe reading.
            return incidents.DiedSeen && incidents.OutsideKills == 0
                ? $"the job's script stopped its own container during stage '{stageName}': it sent SIGTERM to the container's main process (PID 1), the executor's stage server, and nothing outside the container stopped it (Docker recorded no `docker stop` or kill)."
                : null;
        }
        if (incidents.ProcessLimitHits > 0)
        {
            var limit = incidents.PidsLimit is { } pids ? $" of {pids.ToString(CultureInfo.InvariantCulture)} tasks" : "";
            return $"the job reached its container's process limit{limit} (container.pids_limit; threads count as tasks) {Times(incidents.ProcessLimitHits)} during stage '{stageName}': new processes or threads could not start. A fork bomb does this, or a program that starts more workers or threads than the limit allows; the host is unharmed.";
        }
        return null;
    }

    /// <summary>Below this much space left to unprivileged writers, a failed stage is said to have met a full disk.</summary>
    private const long FullDiskBytes = 1L << 20;

    /// <summary>
    /// A stage that failed while the filesystem of one of its writable directories is full: "No
    /// space left on device" somewhere in a long log is easy to miss (BusyBox says only "I/O
    /// error"), and the host's other jobs share that filesystem.
    /// </summary>
    public static string? FullDisk(string stageName, string what, string hostPath)
    {
        long free, size;
        try
        {
            var filesystem = new DriveInfo(hostPath);
            (free, size) = (filesystem.AvailableFreeSpace, filesystem.TotalSize);
        }
        catch (Exception error) when (error is IOException or UnauthorizedAccessException or ArgumentException)
        {
            return null;
        }
        return free >= FullDiskBytes
            ? null
            : $"the job's {what} is full during stage '{stageName}': {Size(free)} left of {Size(size)} on its filesystem on the host. The job wrote more than that filesystem holds; write less, or ask the admin for more room there.";
    }

    private static string OutOfMemory(ContainerIncidents incidents)
    {
        var limit = incidents.MemoryLimitBytes is { } bytes
            ? $"its container reached its memory limit of {Size(bytes)} (container.memory)"
            : "the host ran out of memory";
        return $"out of memory: the kernel killed a process of the job ({Times(incidents.OutOfMemoryKills)}) because {limit}. Use less memory (a smaller batch size, fewer DataLoader workers) or a runner with more.";
    }

    private static string Size(long bytes) => bytes switch
    {
        < 1L << 20 => $"{bytes.ToString(CultureInfo.InvariantCulture)} bytes",
        _ when bytes % (1L << 30) == 0 => $"{(bytes >> 30).ToString(CultureInfo.InvariantCulture)} GiB",
        _ => $"{(bytes / 1048576.0).ToString("0.#", CultureInfo.InvariantCulture)} MiB",
    };

    private static string Times(long count) => count == 1 ? "once" : $"{count.ToString(CultureInfo.InvariantCulture)} times";
}
