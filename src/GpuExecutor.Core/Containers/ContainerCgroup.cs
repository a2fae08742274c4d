using System.Globalization;

namespace GpuExecutor.Containers;

/// <summary>
/// Reads a running container's counters from its control group on the host, found through its
/// main process: Docker's API reports an OOM kill as an event, but a fork that failed at the
/// process limit only in the cgroup's pids.events. Works with cgroup v1 (the pids controller's
/// own hierarchy) and v2 (the unified one).
/// </summary>
public static class ContainerCgroup
{
    private const string CgroupRoot = "/sys/fs/cgroup";

    /// <summary>How often a new task failed at the pids limit ("max" in pids.events); 0 when unknown.</summary>
    /// <param name="mainProcessId">The container's main process, as the daemon sees it.</param>
    /// <param name="containerId">The container's full id: its cgroup's path must hold it, or the pid is not the container's here (an executor in a PID namespace other than the daemon's).</param>
    public static long ProcessLimitHits(int mainProcessId, string containerId)
    {
        try
        {
            var membership = File.ReadAllLines($"/proc/{mainProcessId.ToString(CultureInfo.InvariantCulture)}/cgroup");
            var directory = PidsDirectory(membership);
            return directory is null || !directory.Contains(containerId, StringComparison.Ordinal) ? 0 : CountOf(File.ReadAllLines(Path.Join(directory, "pids.events")), "max");
        }
        catch (Exception error) when (error is IOException or UnauthorizedAccessException)
        {
            // The process ended, or the host mounts its cgroups elsewhere: no count, no claim.
            return 0;
        }
    }

    /// <summary>The cgroup directory that holds pids.events, from /proc/PID/cgroup's lines ("ID:CONTROLLERS:PATH").</summary>
    public static string? PidsDirectory(IEnumerable<string> membership)
    {
        string? unified = null;
        foreach (var line in membership)
        {
            var fields = line.Split(':', 3);
            if (fields.Length != 3 || fields[2].Contains("..", StringComparison.Ordinal))
                continue;
            if (fields[1].Split(',').Contains("pids"))
                return CgroupRoot + "/pids" + fields[2];
            if (fields[0] == "0" && fields[1].Length == 0)
                unified = CgroupRoot + fields[2];
        }
        return unified;
    }

    /// <summary>The value of <paramref name="key"/> in a flat-keyed cgroup file ("key value" lines).</summary>
    public static long CountOf(IEnumerable<string> lines, string key)
    {
        foreach (var line in lines)
        {
            var parts = line.Split(' ', 2);
            if (parts.Length == 2 && parts[0] == key && long.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out var value))
                return value;
        }
        return 0;
    }
}
