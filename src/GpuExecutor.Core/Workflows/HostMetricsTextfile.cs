using System.Globalization;
using System.Text;
using GpuExecutor.Checkpoints;
using GpuExecutor.Configuration;
using GpuExecutor.Containers;
using GpuExecutor.Gpus;
using GpuExecutor.Metrics;
using GpuExecutor.Telemetry;

namespace GpuExecutor.Workflows;

/// <summary>
/// The host's metrics as a Prometheus textfile for node_exporter's textfile collector:
/// the counters from state_dir, and gauges read when the file is written (the GPU ledger from
/// Docker's labels, the GPUs' last samples, the waiting jobs, the active runs). Any process may
/// write it (prepare, cleanup, gc, the GPU sampler, the checkpoint agent, `metrics`): each
/// writes a whole file beside the old one and renames it over, so node_exporter reads one
/// writer's file or another's, never half of one.
/// </summary>
public sealed class HostMetricsTextfile(ExecutorConfig config, IContainerDriver driver)
{
    public const string FileName = "gpu_executor.prom";

    /// <summary>How long the writer waits for Docker's list of containers: a daemon that does not answer makes docker_up 0, not a stuck writer.</summary>
    public static readonly TimeSpan DockerWait = TimeSpan.FromSeconds(5);

    private string StateDir => config.StateDir;

    public async Task<string> RenderAsync(DateTimeOffset now, CancellationToken cancellationToken)
    {
        var series = new List<(string Series, double Value)> { (MetricSeries.Of(HostMetrics.BuildInfo, ("version", Protocol.VersionInfo.Version)), 1) };
        var counted = MetricCounters.Read(StateDir);
        series.AddRange(counted.Select(pair => (pair.Key, pair.Value)));
        // Unlabelled counters and kept gauges are there from the first file on, at 0, so that
        // rate() and alerts see them before their first event.
        foreach (var family in HostMetrics.Families.Where(family => family.Name is not HostMetrics.VerbCalls && IsKept(family.Name)))
        {
            if (!counted.ContainsKey(family.Name))
                series.Add((family.Name, 0));
        }

        IReadOnlyDictionary<string, GpuHolder>? holders = null;
        try
        {
            using var wait = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            wait.CancelAfter(DockerWait);
            holders = await GpuLedger.ReadAsync(driver, wait.Token);
        }
        catch (Exception error) when (error is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            // Docker does not answer: the GPU gauges are left out rather than guessed.
        }
        series.Add((HostMetrics.DockerUp, holders is null ? 0 : 1));
        if (holders is not null)
            AddGpus(series, holders);

        var waits = GpuWaits.Read(StateDir);
        series.Add((HostMetrics.GpuWaitingJobs, waits.Count));
        series.Add((HostMetrics.GpuOldestWait, waits.Count == 0 ? 0 : Math.Max(0, (now - waits.Min(wait => wait.Since)).TotalSeconds)));

        var runs = ActiveRuns();
        series.Add((HostMetrics.ActiveRuns, runs.Count));
        foreach (var (run, safeAt) in runs.OrderBy(pair => pair.Key, StringComparer.Ordinal))
        {
            series.Add((MetricSeries.Of(HostMetrics.LastSafeCommit, ("run", run)), safeAt.ToUnixTimeMilliseconds() / 1000.0));
            series.Add((MetricSeries.Of(HostMetrics.SinceSafeCommit, ("run", run)), Math.Max(0, (now - safeAt).TotalSeconds)));
        }
        return Format(series);
    }

    /// <summary>Writes the file into metrics.textfile_dir; null when written (or metrics are off), else why not.</summary>
    public async Task<string?> WriteAsync(CancellationToken cancellationToken)
    {
        if (config.Metrics.TextfileDir is not { } directory)
            return null;
        var text = await RenderAsync(DateTimeOffset.UtcNow, cancellationToken);
        // node_exporter reads only *.prom: the file beside the old one is invisible to it.
        var temporary = Path.Combine(directory, $".{FileName}.{Environment.ProcessId.ToString(CultureInfo.InvariantCulture)}.{Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(4))}.tmp");
        try
        {
            await File.WriteAllTextAsync(temporary, text, cancellationToken);
            File.SetUnixFileMode(temporary, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
            File.Move(temporary, Path.Combine(directory, FileName), overwrite: true);
            return null;
        }
        catch (Exception error) when (error is IOException or UnauthorizedAccessException)
        {
            try
            {
                File.Delete(temporary);
            }
            catch (Exception cleanup) when (cleanup is IOException or UnauthorizedAccessException)
            {
            }
            return $"the metrics file cannot be written in {directory}: {error.Message}";
        }
    }

    /// <summary>Writes the file, where metrics are on, and swallows what goes wrong: metrics never fail the work that triggers them.</summary>
    public async Task TryWriteAsync()
    {
        if (config.Metrics.TextfileDir is null)
            return;
        try
        {
            using var bounded = new CancellationTokenSource(DockerWait * 2);
            await WriteAsync(bounded.Token);
        }
        catch (Exception error) when (error is IOException or UnauthorizedAccessException or OperationCanceledException)
        {
        }
    }

    /// <summary>Adds to the host's counters (where they are kept) and rewrites the file.</summary>
    public Task CountAsync(params (string Series, double Delta)[] deltas)
    {
        MetricCounters.Add(StateDir, deltas);
        return TryWriteAsync();
    }

    private static bool IsKept(string name) => HostMetrics.Families.First(family => family.Name == name) switch
    {
        { Type: "counter" } => true,
        { Name: HostMetrics.CacheBytes or HostMetrics.CacheObjects } => true,
        _ => false,
    };

    private void AddGpus(List<(string, double)> series, IReadOnlyDictionary<string, GpuHolder> holders)
    {
        var pool = GpuPoolRecord.Read(StateDir);
        string IndexOf(string uuid) => pool.FirstOrDefault(gpu => gpu.Uuid == uuid)?.Index.ToString(CultureInfo.InvariantCulture) ?? "";
        foreach (var gpu in pool)
            series.Add((MetricSeries.Of(HostMetrics.GpuHeld, ("gpu", gpu.Index.ToString(CultureInfo.InvariantCulture)), ("uuid", gpu.Uuid), ("model", gpu.Model)), holders.ContainsKey(gpu.Uuid) ? 1 : 0));
        var lastSamples = new Dictionary<string, GpuSample>(StringComparer.Ordinal);
        foreach (var jobId in holders.Values.Select(holder => holder.JobId).Distinct())
        {
            if (long.TryParse(jobId, NumberStyles.None, CultureInfo.InvariantCulture, out var id))
            {
                foreach (var sample in GpuTelemetryFiles.ReadNewest(GpuTelemetryFiles.SamplesFile(StateDir, id)))
                    lastSamples[sample.Uuid] = sample;
            }
        }
        foreach (var holder in holders.Values.OrderBy(holder => holder.Uuid, StringComparer.Ordinal))
        {
            var gpu = ("gpu", IndexOf(holder.Uuid));
            var uuid = ("uuid", holder.Uuid);
            series.Add((MetricSeries.Of(HostMetrics.GpuHolder, gpu, uuid, ("job", holder.JobId), ("project", holder.ProjectId)), 1));
            if (!lastSamples.TryGetValue(holder.Uuid, out var sample))
                continue;
            if (sample.UtilizationPercent is { } utilization)
                series.Add((MetricSeries.Of(HostMetrics.GpuUtilization, gpu, uuid), utilization / 100));
            if (sample.MemoryUsedMiB is { } memory)
                series.Add((MetricSeries.Of(HostMetrics.GpuMemoryUsed, gpu, uuid), memory * 1048576));
            series.Add((MetricSeries.Of(HostMetrics.GpuSampleTime, gpu, uuid), sample.Time.ToUnixTimeMilliseconds() / 1000.0));
        }
    }

    /// <summary>Runs whose checkpoint agent lives on this host, with when their work was last safe.</summary>
    private Dictionary<string, DateTimeOffset> ActiveRuns()
    {
        var runs = new Dictionary<string, DateTimeOffset>(StringComparer.Ordinal);
        var root = Path.Combine(StateDir, "checkpoints");
        if (!Directory.Exists(root))
            return runs;
        foreach (var runDirectory in Directory.EnumerateDirectories(root))
        {
            var directories = new RunDirectories(runDirectory);
            var statuses = directories.AgentJobIds().Select(jobId => CheckpointAgent.ReadStatus(directories, jobId)).OfType<CheckpointAgentStatus>().ToList();
            var live = statuses.Where(status => !status.Exited && status.Pid > 0 && OrphanedAgents.IsAgentOf(status.Pid, status.JobId)).ToList();
            if (live.Count == 0)
                continue;
            // Safe up to the newest commit from this host, or the live agent's start (what
            // restore put in place was committed already), whichever is later.
            var times = statuses.Select(status => status.CommittedAt).Concat(live.Select(status => status.StartedAt)).OfType<DateTimeOffset>().ToList();
            if (times.Count > 0)
                runs[Path.GetFileName(runDirectory)] = times.Max();
        }
        return runs;
    }

    private static string Format(List<(string Series, double Value)> series)
    {
        var byName = series.GroupBy(entry => MetricSeries.NameOf(entry.Series)).ToDictionary(group => group.Key, group => group.ToList(), StringComparer.Ordinal);
        var text = new StringBuilder();
        foreach (var family in HostMetrics.Families)
        {
            if (!byName.TryGetValue(family.Name, out var entries))
                continue;
            text.Append("# HELP ").Append(family.Name).Append(' ').Append(family.Help).Append('\n');
            text.Append("# TYPE ").Append(family.Name).Append(' ').Append(family.Type).Append('\n');
            foreach (var (name, value) in entries.OrderBy(entry => entry.Series, StringComparer.Ordinal))
                text.Append(name).Append(' ').Append(MetricSeries.Value(value)).Append('\n');
        }
        return text.ToString();
    }
}
