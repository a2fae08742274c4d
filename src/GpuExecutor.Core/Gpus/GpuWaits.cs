using System.Globalization;

namespace GpuExecutor.Gpus;

/// <summary>
/// Jobs whose prepare waits for GPUs, for the metrics: one file per waiting job under
/// state_dir/gpus/waiting, holding the waiting process and when it began. A prepare that is
/// killed leaves its file; a file whose process is gone does not count, and the next waiter's
/// registration removes it.
/// </summary>
public static class GpuWaits
{
    public static string DirectoryOf(string stateDir) => Path.Combine(stateDir, "gpus", "waiting");

    public sealed record Wait(long JobId, DateTimeOffset Since);

    /// <summary>Records the wait until the returned handle is disposed.</summary>
    public static IDisposable Register(string stateDir, long jobId, DateTimeOffset since)
    {
        var registration = new Registration(stateDir, jobId);
        registration.Begin(since);
        return registration;
    }

    /// <summary>The waits whose process still runs.</summary>
    public static IReadOnlyList<Wait> Read(string stateDir) => Read(stateDir, includeDead: false).Select(entry => entry.Wait).ToList();

    private static List<(Wait Wait, int Pid)> Read(string stateDir, bool includeDead)
    {
        var waits = new List<(Wait, int)>();
        var directory = DirectoryOf(stateDir);
        if (!Directory.Exists(directory))
            return waits;
        foreach (var path in Directory.EnumerateFiles(directory, "job-*"))
        {
            string[] fields;
            try
            {
                fields = File.ReadAllText(path).Split(' ', StringSplitOptions.TrimEntries);
            }
            catch (IOException)
            {
                continue;
            }
            if (fields.Length == 2
                && long.TryParse(Path.GetFileName(path)["job-".Length..], NumberStyles.None, CultureInfo.InvariantCulture, out var jobId)
                && int.TryParse(fields[0], NumberStyles.None, CultureInfo.InvariantCulture, out var pid)
                && long.TryParse(fields[1], NumberStyles.None, CultureInfo.InvariantCulture, out var sinceMs))
            {
                var entry = (new Wait(jobId, DateTimeOffset.FromUnixTimeMilliseconds(sinceMs)), pid);
                if (includeDead || IsAlive(entry))
                    waits.Add(entry);
            }
        }
        return waits;
    }

    private static bool IsAlive((Wait Wait, int Pid) entry) => Directory.Exists("/proc/" + entry.Pid.ToString(CultureInfo.InvariantCulture));

    /// <summary>A job's wait, recorded from <see cref="Begin"/> (if it ever waits) until disposed.</summary>
    public sealed class Registration(string stateDir, long jobId) : IDisposable
    {
        private readonly string _path = Path.Combine(DirectoryOf(stateDir), "job-" + jobId.ToString(CultureInfo.InvariantCulture));

        public bool Begun { get; private set; }

        public void Begin(DateTimeOffset since)
        {
            var directory = DirectoryOf(stateDir);
            Directory.CreateDirectory(directory);
            File.WriteAllText(_path, $"{Environment.ProcessId.ToString(CultureInfo.InvariantCulture)} {since.ToUnixTimeMilliseconds().ToString(CultureInfo.InvariantCulture)}\n");
            Begun = true;
            foreach (var stale in Read(stateDir, includeDead: true).Where(wait => !IsAlive(wait)))
                File.Delete(Path.Combine(directory, "job-" + stale.Wait.JobId.ToString(CultureInfo.InvariantCulture)));
        }

        public void Dispose()
        {
            if (Begun)
                File.Delete(_path);
        }
    }
}
