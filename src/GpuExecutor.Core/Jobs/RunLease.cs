using System.Globalization;
using GpuExecutor.HostFiles;
using GpuExecutor.Clocks;

namespace GpuExecutor.Jobs;

/// <summary>
/// Held by every `run` of a job for as long as it works, its stop sequence and final commit
/// included; cleanup waits for it before it removes the job's containers. The runner calls
/// cleanup while `run` may still be inside its grace period (on a job timeout it waits at most
/// 5 minutes for the stage), and a container removed then would kill a trainer writing its last
/// checkpoint, or the agent's final pass would find its files gone. An flock: a `run` that dies
/// (the runner's SIGKILL) frees it at once.
/// </summary>
public static class RunLease
{
    private static readonly TimeSpan PollInterval = TimeSpan.FromMilliseconds(100);

    public static string PathFor(string stateDir, long jobId) =>
        Path.Combine(stateDir, "locks", $"run-job-{jobId.ToString(CultureInfo.InvariantCulture)}.lock");

    /// <summary>Taken at the start of `run`; a second `run` of the same job (the runner runs one at a time) waits.</summary>
    public static Task<HostLock> HoldAsync(string stateDir, long jobId, CancellationToken cancellationToken) =>
        HostLock.AcquireAsync(PathFor(stateDir, jobId), cancellationToken);

    /// <summary>
    /// Whether a `run` of the job on this host holds the lease now: it is still stopping its stage
    /// or committing, whatever the job's deadline says. False when no `run` ever took it.
    /// </summary>
    public static bool IsHeld(string stateDir, long jobId)
    {
        var path = PathFor(stateDir, jobId);
        if (!File.Exists(path))
            return false;
        using var free = HostLock.TryAcquire(path);
        // A file deleted between the two calls (cleanup just took it) reads as held: the safe side.
        return free is null;
    }

    /// <summary>
    /// Waits, up to <paramref name="limit"/>, until no `run` of the job holds the lease, then removes
    /// its file. True when it was free in time; false when a `run` still holds it (cleanup then
    /// goes on: it must end, and its removals stop what is left).
    /// </summary>
    public static async Task<bool> WaitUntilReleasedAsync(string stateDir, long jobId, TimeSpan limit, Action<string> log)
    {
        var path = PathFor(stateDir, jobId);
        var giveUp = Monotonic.Now + limit;
        var told = false;
        while (true)
        {
            using (var free = HostLock.TryAcquire(path))
            {
                // No file: no `run` of this job ever took it.
                if (free is not null || !File.Exists(path))
                {
                    TryDelete(path);
                    return true;
                }
            }
            if (Monotonic.Now >= giveUp)
            {
                log($"WARNING: run of job {jobId} is still stopping its stage or committing after {limit.TotalSeconds:0} s; removing the job's containers anyway.");
                return false;
            }
            if (!told)
            {
                log($"Waiting up to {limit.TotalSeconds:0} s for run of job {jobId} to finish stopping its stage and committing its last checkpoint.");
                told = true;
            }
            await Task.Delay(PollInterval);
        }
    }

    private static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (Exception error) when (error is IOException or UnauthorizedAccessException)
        {
            // A leftover lock file is a few bytes and harmless: the next job has another id.
        }
    }
}
