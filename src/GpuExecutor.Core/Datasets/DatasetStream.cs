using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using GpuExecutor.Configuration;
using GpuExecutor.Containers;
using GpuExecutor.HostFiles;
using GpuExecutor.Outcomes;
using GpuExecutor.Storage;
using GpuExecutor.Clocks;

namespace GpuExecutor.Datasets;

/// <summary>One object a streamed dataset still waits for: where it comes from and where it goes in its view.</summary>
public sealed record StreamedObject(string View, string Store, string Bucket, string Key, long Size, string ETag, string Path);

/// <summary>What prepare leaves the job's stream fetcher: the objects still to come, in the order they are wanted.</summary>
public sealed record DatasetStreamPlan(long JobId, IReadOnlyList<StreamedObject> Pending);

/// <summary>One object of a streamed dataset's index: its path in the view, its size, and whether it is there, whole and verified.</summary>
public sealed record StreamIndexEntry(string Path, long Size, bool Ready);

/// <summary>
/// The index a streamed dataset's view holds (<see cref="DatasetStreams.IndexFileName"/>), for the
/// job's loader: every object, whether it is ready, whether all are, and, if the stream failed,
/// why and on which object. Replaced whole (written beside, then renamed), never torn.
/// </summary>
public sealed record StreamIndex(bool Complete, string? Failed, IReadOnlyList<StreamIndexEntry> Objects);

/// <summary>The stream fetcher's status, for prepare, `run`, cleanup and gc.</summary>
public sealed record DatasetStreamStatus(int Pid, int Done, int Total, long Bytes, DateTimeOffset StartedAt)
{
    public DateTimeOffset? EndedAt { get; init; }
    public string? Failed { get; init; }
    public string? EndReason { get; init; }
}

[JsonSourceGenerationOptions(WriteIndented = false, PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(DatasetStreamPlan))]
[JsonSerializable(typeof(StreamIndex))]
[JsonSerializable(typeof(DatasetStreamStatus))]
internal sealed partial class DatasetStreamJsonContext : JsonSerializerContext;

/// <summary>Starts a job's stream fetcher as a process that outlives prepare and the runner; tests use a fake.</summary>
public interface IDatasetStreamLauncher
{
    /// <summary>Starts the fetcher of <paramref name="jobId"/>'s streamed datasets; returns the path of its log.</summary>
    string Start(long jobId);
}

/// <summary>Where a job's stream lives: its plan, status and log beside the job's views; the index inside each view.</summary>
public static class DatasetStreams
{
    /// <summary>In each streamed view: the loader reads it; a dataset key of that name is left out of every view.</summary>
    public const string IndexFileName = ".gpu-executor-index.json";

    public static string PlanFile(string views) => Path.Combine(views, "stream-plan.json");

    public static string StatusFile(string views) => Path.Combine(views, "stream-status.json");

    public static string LogFile(string views) => Path.Combine(views, "stream.log");

    /// <summary>The variable that names, in the container, where a loader records its waits for data (one "SECONDS PATH" line each).</summary>
    public const string WaitsVariable = "GPU_EXECUTOR_DATASET_WAITS";

    /// <summary>The waits file's name, in the job's builds directory: outside the project's worktree, so never an artifact.</summary>
    public const string WaitsFileName = ".gpu-executor-dataset-waits";

    /// <summary>
    /// The loader's waits, summed: how long the job waited on data in all, and how many times. The
    /// file is the job's, so it is read without following a symlink, at most 1 MiB of it, and a
    /// line that is not "SECONDS PATH" is skipped.
    /// </summary>
    public static (double Seconds, int Waits)? ReadWaits(string buildsHostDir)
    {
        var opened = NoFollowFiles.OpenRegularFile(buildsHostDir, WaitsFileName);
        if (opened is not var (handle, _))
            return null;
        using (handle)
        {
            using var stream = new FileStream(handle, FileAccess.Read);
            var buffer = new byte[1 << 20];
            var length = stream.ReadAtLeast(buffer, buffer.Length, throwOnEndOfStream: false);
            double seconds = 0;
            var waits = 0;
            foreach (var line in System.Text.Encoding.UTF8.GetString(buffer, 0, length).Split('\n'))
            {
                var space = line.IndexOf(' ');
                if (space > 0 && double.TryParse(line[..space], NumberStyles.Float, CultureInfo.InvariantCulture, out var waited) && waited is >= 0 and < 1e7)
                {
                    seconds += waited;
                    waits++;
                }
            }
            return (seconds, waits);
        }
    }

    public static void WritePlan(string views, DatasetStreamPlan plan) =>
        StateFiles.Write(PlanFile(views), plan, DatasetStreamJsonContext.Default.DatasetStreamPlan);

    public static DatasetStreamPlan? ReadPlan(string views) =>
        StateFiles.Read(PlanFile(views), DatasetStreamJsonContext.Default.DatasetStreamPlan);

    public static DatasetStreamStatus? ReadStatus(string views) =>
        StateFiles.Read(StatusFile(views), DatasetStreamJsonContext.Default.DatasetStreamStatus);

    public static void WriteStatus(string views, DatasetStreamStatus status) =>
        StateFiles.Write(StatusFile(views), status, DatasetStreamJsonContext.Default.DatasetStreamStatus);

    /// <summary>Replaces the view's index whole: written under the job's views directory (same file system), then renamed in.</summary>
    public static void WriteIndex(string view, StreamIndex index)
    {
        var temporary = Path.Combine(Path.GetDirectoryName(view)!, $".index-{Path.GetFileName(view)}.tmp");
        File.WriteAllBytes(temporary, JsonSerializer.SerializeToUtf8Bytes(index, DatasetStreamJsonContext.Default.StreamIndex));
        File.Move(temporary, Path.Combine(view, IndexFileName), overwrite: true);
    }

    public static StreamIndex? ReadIndex(string view)
    {
        try
        {
            return JsonSerializer.Deserialize(File.ReadAllBytes(Path.Combine(view, IndexFileName)), DatasetStreamJsonContext.Default.StreamIndex);
        }
        catch (Exception error) when (error is IOException or JsonException)
        {
            return null;
        }
    }

    /// <summary>Stops the job's stream fetcher, if one runs: before its views go, so it never links into a removed view.</summary>
    public static void Stop(string views, long jobId)
    {
        if (ReadStatus(views) is not { EndedAt: null, Pid: var pid } || !DetachedVerbs.Runs(pid, "datasets", "stream", jobId))
            return;
        try
        {
            using var process = System.Diagnostics.Process.GetProcessById(pid);
            // SIGKILL is safe: an object in flight is a .part file with its ranges record, which
            // the next fetch of it resumes, and nothing was linked into a view before it was whole.
            process.Kill();
            process.WaitForExit(TimeSpan.FromSeconds(10));
        }
        catch (Exception error) when (error is ArgumentException or InvalidOperationException or System.ComponentModel.Win32Exception)
        {
            // Gone in the meantime.
        }
    }
}

/// <summary>
/// The stream fetcher (`datasets stream JOB`): fetches what prepare left of a job's streamed
/// datasets, in the plan's order, a few objects at a time, into the host cache under the same
/// per-object locks as every other fetch, and links each into its view once it is whole and
/// verified, updating the view's index. It ends when every object is in, when one cannot be
/// fetched (the index then says which, and why), when the job's container is gone, when the
/// Docker daemon has not answered for checkpoints.agent_daemon_lost_seconds, or at the job's
/// deadline (or that of a job that adopted its training) plus cleanup.gc_grace_seconds. Cleanup
/// and gc stop it before they remove the views.
/// </summary>
/// <param name="adoptedUntil">The deadline of a job that adopted the job's training (re-attach), if any: the stream goes on to it.</param>
public sealed class DatasetStreamer(ExecutorConfig config, IContainerDriver driver, IObjectStoreOpener stores, Action<string> log, Func<long, DateTimeOffset?> adoptedUntil)
{
    private static readonly TimeSpan WatchInterval = TimeSpan.FromSeconds(2);
    private static readonly TimeSpan IndexInterval = TimeSpan.FromMilliseconds(200);

    public async Task RunAsync(long jobId, CancellationToken stop)
    {
        var cache = new DatasetCache(config.StateDir, log);
        var views = cache.ViewsOf(jobId);
        var plan = DatasetStreams.ReadPlan(views) ?? throw new SystemFailureException($"job {jobId} has no dataset stream plan in {views}.");
        var status = new DatasetStreamStatus(Environment.ProcessId, 0, plan.Pending.Count, 0, DateTimeOffset.UtcNow);
        DatasetStreams.WriteStatus(views, status);
        log($"streaming {plan.Pending.Count} objects ({plan.Pending.Sum(item => item.Size) / 1048576.0:0.0} MiB) for job {jobId}, {config.Datasets.StreamParallelObjects} at a time"
            + (config.Datasets.StreamMaxBytesPerSecond is { } cap ? $", at most {cap / 1048576.0:0.0} MiB/s (datasets.stream_max_rate)" : ""));

        // Each view's index, as prepare wrote it; entries turn ready as their objects arrive.
        var indexes = plan.Pending.Select(item => item.View).Distinct(StringComparer.Ordinal)
            .ToDictionary(view => view, view => DatasetStreams.ReadIndex(view) ?? throw new SystemFailureException($"the view {view} has no stream index."), StringComparer.Ordinal);
        var ready = indexes.ToDictionary(pair => pair.Key, pair => pair.Value.Objects.Where(entry => entry.Ready).Select(entry => entry.Path).ToHashSet(StringComparer.Ordinal), StringComparer.Ordinal);
        var indexLock = new Lock();
        var done = 0;
        long bytes = 0;
        var dirty = false;
        TimeSpan? lastWrite = null;
        void WriteIndexes(bool complete, string? failed, bool force)
        {
            lock (indexLock)
            {
                if (!force && (!dirty || (lastWrite is { } last && Monotonic.Now - last < IndexInterval)))
                    return;
                try
                {
                    foreach (var (view, index) in indexes.Where(pair => Directory.Exists(pair.Key)))
                    {
                        var entries = index.Objects.Select(entry => entry with { Ready = ready[view].Contains(entry.Path) }).ToList();
                        DatasetStreams.WriteIndex(view, new StreamIndex(complete && entries.All(entry => entry.Ready), failed, entries));
                    }
                    if (Directory.Exists(views))
                        DatasetStreams.WriteStatus(views, status with { Done = Volatile.Read(ref done), Bytes = Interlocked.Read(ref bytes) });
                    cache.FlushCounts();
                }
                catch (DirectoryNotFoundException)
                {
                    // The views went (cleanup, gc) between the look and the write: nobody reads them now.
                }
                dirty = false;
                lastWrite = Monotonic.Now;
            }
        }

        using var ending = CancellationTokenSource.CreateLinkedTokenSource(stop);
        var endReason = "every object is in";
        var watching = WatchJobAsync(jobId, reason => endReason = reason, ending);
        var openStores = plan.Pending.Select(item => item.Store).Distinct(StringComparer.Ordinal)
            .ToDictionary(name => name, name => stores.Open(config.Stores.TryGetValue(name, out var settings) ? settings : throw new SystemFailureException($"store '{name}' is no longer configured.")), StringComparer.Ordinal);
        var fetcher = new ObjectFetcher(log, config.Datasets.StreamMaxBytesPerSecond is { } rate ? new BandwidthLimit(rate) : null);
        string? failed = null;
        try
        {
            await Parallel.ForEachAsync(plan.Pending, new ParallelOptions { MaxDegreeOfParallelism = config.Datasets.StreamParallelObjects, CancellationToken = ending.Token }, async (item, token) =>
            {
                var source = new DatasetSource(item.Store, item.Bucket, "");
                try
                {
                    await cache.LinkIntoViewAsync(source, new StoredObject(item.Key, item.Size, item.ETag), openStores[item.Store], fetcher, item.View, item.Path, fetched => Interlocked.Add(ref bytes, fetched), token);
                }
                catch (DirectoryNotFoundException) when (!Directory.Exists(item.View))
                {
                    throw new ViewsGoneException();
                }
                catch (Exception error) when (error is ObjectStoreException or IOException or SystemFailureException or BuildFailureException && !token.IsCancellationRequested)
                {
                    throw new StreamFailedException($"object '{item.Key}' of {item.Store}://{item.Bucket} could not be fetched: {error.Message}", error);
                }
                lock (indexLock)
                {
                    ready[item.View].Add(item.Path);
                    dirty = true;
                }
                Interlocked.Increment(ref done);
                WriteIndexes(complete: false, failed: null, force: false);
            });
        }
        catch (StreamFailedException error)
        {
            failed = error.Message;
            endReason = "an object could not be fetched";
            log($"STREAM FAILED: {failed}");
        }
        catch (ViewsGoneException)
        {
            endReason = "the job's views were removed";
        }
        catch (OperationCanceledException) when (ending.IsCancellationRequested)
        {
            if (stop.IsCancellationRequested)
                endReason = "stopped";
        }
        finally
        {
            await ending.CancelAsync();
            await watching;
            foreach (var store in openStores.Values)
                store.Dispose();
        }
        WriteIndexes(complete: failed is null && done == plan.Pending.Count, failed, force: true);
        if (Directory.Exists(views))
            DatasetStreams.WriteStatus(views, status with { Done = done, Bytes = Interlocked.Read(ref bytes), EndedAt = DateTimeOffset.UtcNow, Failed = failed, EndReason = endReason });
            cache.FlushCounts();
        log($"stream done: {done} of {plan.Pending.Count} objects, {Interlocked.Read(ref bytes) / 1048576.0:0.0} MiB fetched; {endReason}");
    }

    /// <summary>Ends the stream when the job has: its container gone, its daemon lost, or its deadline long past.</summary>
    private async Task WatchJobAsync(long jobId, Action<string> ended, CancellationTokenSource ending)
    {
        var container = JobContainerNames.For(jobId, JobContainerNames.JobRole);
        HostDeadline? deadline = null;
        TimeSpan? unreachableSince = null;
        while (!ending.IsCancellationRequested)
        {
            try
            {
                await Task.Delay(WatchInterval, ending.Token);
            }
            catch (OperationCanceledException)
            {
                return;
            }
            string? reason = null;
            try
            {
                if (await driver.InspectStateAsync(container, ending.Token) is not { Running: true })
                    reason = $"the job's container {container} is gone";
                else
                    deadline ??= (await driver.FindAsync(JobLabels.SelectJob(jobId), ending.Token)).Select(found => JobLabels.ReadHostDeadline(found.Labels)).FirstOrDefault(found => found is not null);
                unreachableSince = null;
            }
            catch (ContainerEngineException)
            {
                unreachableSince ??= Monotonic.Now;
                if (Monotonic.Now - unreachableSince >= config.Checkpoints.AgentDaemonLost)
                    reason = "the Docker daemon has not answered for checkpoints.agent_daemon_lost_seconds";
            }
            catch (OperationCanceledException)
            {
                return;
            }
            // A job that adopted this job's training (re-attach) keeps its stream to its own deadline.
            if (reason is null && deadline?.Current + config.Cleanup.GcGracePeriod is { } end && DateTimeOffset.UtcNow >= end
                && !(adoptedUntil(jobId) + config.Cleanup.GcGracePeriod > DateTimeOffset.UtcNow))
                reason = "the job's deadline (or its adopter's) plus cleanup.gc_grace_seconds passed";
            if (reason is not null && !ending.IsCancellationRequested)
            {
                ended(reason);
                await ending.CancelAsync();
                return;
            }
        }
    }

    private sealed class StreamFailedException(string message, Exception inner) : Exception(message, inner);

    private sealed class ViewsGoneException() : Exception("the job's views were removed");
}
