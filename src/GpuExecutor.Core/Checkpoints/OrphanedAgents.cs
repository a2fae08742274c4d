using System.Globalization;
using GpuExecutor.HostFiles;

namespace GpuExecutor.Checkpoints;

/// <summary>
/// Agents that outlived their job: one whose status says it exited while its process still
/// runs, or one whose job's deadline passed longer ago than the grace. The agent ends by itself
/// in both cases; this is the janitor's net for a bug or a hung call, so that no agent holds its
/// run's lock forever.
/// </summary>
public static class OrphanedAgents
{
    public sealed record Orphan(long JobId, string RunKey, int Pid, string Why);

    public static IReadOnlyList<Orphan> Find(string stateDir, TimeSpan grace, DateTimeOffset now)
    {
        var runs = Path.Combine(stateDir, "checkpoints");
        if (!Directory.Exists(runs))
            return [];
        var orphans = new List<Orphan>();
        foreach (var runDirectory in Directory.EnumerateDirectories(runs))
        {
            var directories = new RunDirectories(runDirectory);
            foreach (var jobId in directories.AgentJobIds())
            {
                if (CheckpointAgent.ReadStatus(directories, jobId) is not { Pid: > 0 } status || !IsAgentOf(status.Pid, jobId))
                    continue;
                if (status.Exited)
                    orphans.Add(new Orphan(jobId, Path.GetFileName(runDirectory), status.Pid, "its status says it exited, yet it still runs"));
                else if (status.CurrentDeadline is { } deadline && now > deadline + grace)
                    orphans.Add(new Orphan(jobId, Path.GetFileName(runDirectory), status.Pid, $"its job's deadline passed at {deadline:yyyy-MM-dd HH:mm:ss} UTC, more than cleanup.gc_grace_seconds ago"));
            }
        }
        return orphans;
    }

    /// <summary>Whether the process is this job's agent: a pid, once its process is gone, may be anyone's.</summary>
    public static bool IsAgentOf(int pid, long jobId) => DetachedVerbs.Runs(pid, "checkpoints", "agent", jobId);

    /// <summary>SIGKILL: the agent's commits are crash-safe (blobs, manifest, then LATEST), so nothing half-done is left.</summary>
    public static void Stop(Orphan orphan)
    {
        try
        {
            using var process = System.Diagnostics.Process.GetProcessById(orphan.Pid);
            if (IsAgentOf(orphan.Pid, orphan.JobId))
                process.Kill();
        }
        catch (Exception error) when (error is ArgumentException or InvalidOperationException or System.ComponentModel.Win32Exception)
        {
            // Gone in the meantime: nothing to stop.
        }
    }
}
