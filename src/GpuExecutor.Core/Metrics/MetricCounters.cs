using System.Text;
using GpuExecutor.HostFiles;

namespace GpuExecutor.Metrics;

/// <summary>
/// The host's counters (and the few gauges that are cheaper to keep than to recount), kept in
/// state_dir/metrics/counters.txt so that they never go backwards whichever process counts: every
/// verb call, agent and fetcher on the host adds to the one file, under a host lock, and
/// replaces it whole (written beside, renamed over), so a crash leaves the old totals or the new.
/// </summary>
public static class MetricCounters
{
    /// <summary>How long a count waits for another process's: a frozen holder costs one count, never a job's time.</summary>
    public static readonly TimeSpan LockWait = TimeSpan.FromSeconds(2);

    public static string DirectoryOf(string stateDir) => Path.Combine(stateDir, "metrics");

    public static string PathOf(string stateDir) => Path.Combine(DirectoryOf(stateDir), "counters.txt");

    /// <summary>Changes the totals under the lock; false when the lock or the file could not be had (the change is lost, and says so nowhere else).</summary>
    public static bool Update(string stateDir, Action<Dictionary<string, double>> change)
    {
        try
        {
            var directory = DirectoryOf(stateDir);
            Directory.CreateDirectory(directory);
            using var wait = new CancellationTokenSource(LockWait);
            using var hostLock = HostLock.AcquireAsync(Path.Combine(directory, "counters.lock"), wait.Token).GetAwaiter().GetResult();
            var totals = new Dictionary<string, double>(Read(stateDir), StringComparer.Ordinal);
            change(totals);
            var text = new StringBuilder();
            foreach (var (series, value) in totals.OrderBy(pair => pair.Key, StringComparer.Ordinal))
                text.Append(series).Append(' ').Append(MetricSeries.Value(value)).Append('\n');
            StateFiles.WriteText(PathOf(stateDir), text.ToString());
            return true;
        }
        catch (Exception error) when (error is IOException or UnauthorizedAccessException or OperationCanceledException)
        {
            return false;
        }
    }

    /// <summary>
    /// Whether this host keeps counters: since metrics were first turned on (the directory
    /// exists), by any process, including the detached ones that do not read the config's
    /// [metrics] table again.
    /// </summary>
    public static bool AreKept(string stateDir) => Directory.Exists(DirectoryOf(stateDir));

    /// <summary>Adds to the totals, where this host keeps them (<see cref="AreKept"/>).</summary>
    public static bool Add(string stateDir, params (string Series, double Delta)[] deltas) =>
        AreKept(stateDir) && AddTo(stateDir, deltas);

    /// <summary>Adds to the totals, and starts keeping them on this host if it did not (a verb of a config with metrics on).</summary>
    public static bool StartKeepingAndAdd(string stateDir, params (string Series, double Delta)[] deltas) =>
        AddTo(stateDir, deltas);

    private static bool AddTo(string stateDir, (string Series, double Delta)[] deltas) =>
        deltas.Length > 0 && Update(stateDir, totals =>
        {
            foreach (var (series, delta) in deltas)
            {
                if (delta != 0 || !totals.ContainsKey(series))
                    totals[series] = totals.GetValueOrDefault(series) + delta;
            }
        });

    public static IReadOnlyDictionary<string, double> Read(string stateDir)
    {
        var totals = new Dictionary<string, double>(StringComparer.Ordinal);
        var path = PathOf(stateDir);
        if (!File.Exists(path))
            return totals;
        foreach (var line in File.ReadLines(path))
        {
            if (MetricSeries.Parse(line) is var (series, value))
                totals[series] = value;
        }
        return totals;
    }
}
