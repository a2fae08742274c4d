using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using GpuExecutor.Configuration;
using GpuExecutor.Containers;
using GpuExecutor.HostFiles;
using GpuExecutor.JobLog;
using GpuExecutor.Jobs;
using GpuExecutor.Metrics;
using GpuExecutor.Outcomes;
using GpuExecutor.Storage;

namespace GpuExecutor.Datasets;

/// <summary>
/// The host's dataset cache, shared by every job: one file per object version, named by a hash
/// of (store, bucket, key, ETag), under STATE_DIR/datasets/objects. A job's dataset is a
/// directory of hardlinks to those files (STATE_DIR/datasets/views/job-ID/N), mounted read-only,
/// so a warm dataset materialises without copying a byte.
/// </summary>
public sealed class DatasetCache(string stateDir, Action<string> log)
{
    // s3rver, like most stores, needs about 32 requests in flight to reach its ceiling on small objects.
    private const int ParallelObjects = 32;
    private static readonly TimeSpan ProgressInterval = TimeSpan.FromSeconds(5);

    private string Root => Path.Combine(stateDir, "datasets");
    private string ObjectsDir => Path.Combine(Root, "objects");
    private string LocksDir => Path.Combine(Root, "locks");

    // What this instance did since its counts last went to the host's metrics (FlushCounts).
    private long _hits;
    private long _misses;
    private long _missBytes;
    private long _fetchedBytes;

    public string ViewsOf(long jobId) => Path.Combine(Root, "views", "job-" + jobId.ToString(CultureInfo.InvariantCulture));

    /// <summary>What a materialisation did, for the job log's summary; StreamPending objects (of StreamPendingBytes) come after the job starts.</summary>
    public sealed record Summary(int Objects, int CacheHits, long BytesFetched, long BytesServed, int Quarantined)
    {
        public int StreamPending { get; init; }
        public long StreamPendingBytes { get; init; }
    }

    /// <param name="streaming">How much of a streamed dataset is in before the job starts; null: every dataset whole, as for an admin's prefetch.</param>
    public async Task<(IReadOnlyList<BindMount> Mounts, Summary Summary)> MaterializeAsync(
        long jobId,
        IReadOnlyList<DatasetMount> datasets,
        IReadOnlyDictionary<string, StoreSettings> storeSettings,
        IObjectStoreOpener stores,
        ObjectFetcher fetcher,
        CancellationToken cancellationToken,
        DatasetSettings? streaming = null)
    {
        RemoveViews(jobId);
        var mounts = new List<BindMount>();
        var used = new System.Collections.Concurrent.ConcurrentDictionary<string, bool>();
        var pending = new List<StreamedObject>();
        var progress = new Progress(log);
        Directory.CreateDirectory(ObjectsDir);
        Directory.CreateDirectory(LocksDir);
        for (var index = 0; index < datasets.Count; index++)
        {
            var dataset = datasets[index];
            var view = Path.Combine(ViewsOf(jobId), index.ToString(CultureInfo.InvariantCulture));
            Directory.CreateDirectory(view);
            using var store = stores.Open(storeSettings[dataset.Source.Store]);
            var objects = await ListAsync(store, dataset, cancellationToken);
            var (paths, quarantined) = DatasetLayout.Plan(dataset.Source, objects.Select(item => item.Key));
            foreach (var item in quarantined.Take(5))
                log($"WARNING: {dataset.Source}: object '{item.Key}' left out: {item.Reason}.");
            if (quarantined.Count > 5)
                log($"WARNING: {dataset.Source}: {quarantined.Count - 5} more objects left out.");
            progress.AddPlanned(paths.Count, objects.Where(item => paths.ContainsKey(item.Key)).Sum(item => item.Size), quarantined.Count);

            var byKey = objects.ToDictionary(item => item.Key, StringComparer.Ordinal);
            IEnumerable<KeyValuePair<string, string>> now = paths;
            if (streaming is not null && dataset.Mode == DatasetMode.Stream)
            {
                var ordered = paths.OrderBy(pair => pair.Key, StringComparer.Ordinal).ToList();
                if (dataset.OrderFile is { } orderFile)
                    ordered = await OrderedByFileAsync(dataset, orderFile, ordered, byKey, store, fetcher, progress, cancellationToken);
                var (head, rest) = SplitForStream(ordered, byKey, streaming);
                now = head;
                pending.AddRange(rest.Select(pair => new StreamedObject(view, dataset.Source.Store, dataset.Source.Bucket, pair.Key, byKey[pair.Key].Size, byKey[pair.Key].ETag, pair.Value)));
                // In use from the moment they are listed: eviction must not take an object the
                // job is about to be given.
                foreach (var key in paths.Keys)
                    used[CacheName(dataset.Source, byKey[key])] = true;
                var later = rest.Select(pair => pair.Key).ToHashSet(StringComparer.Ordinal);
                DatasetStreams.WriteIndex(view, new StreamIndex(later.Count == 0, null,
                    paths.OrderBy(pair => pair.Key, StringComparer.Ordinal).Select(pair => new StreamIndexEntry(pair.Value, byKey[pair.Key].Size, !later.Contains(pair.Key))).ToList()));
            }
            // mkdir takes the parent directory's lock even when the directory exists, and 32
            // fetches asking for the same few directories contend on it: create each once.
            var created = new System.Collections.Concurrent.ConcurrentDictionary<string, bool>(StringComparer.Ordinal) { [view] = true };
            await Parallel.ForEachAsync(now, new ParallelOptions { MaxDegreeOfParallelism = ParallelObjects, CancellationToken = cancellationToken }, async (pair, token) =>
            {
                var item = byKey[pair.Key];
                var (cached, hit) = await EnsureCachedAsync(dataset.Source, item, store, fetcher, progress.BytesFetched, token);
                used[Path.GetFileName(cached)] = true;
                var target = Path.Combine(view, pair.Value);
                // GetOrAdd stores the key only once its factory has returned, so no fetch links
                // into a directory another is still creating.
                created.GetOrAdd(Path.GetDirectoryName(target)!, directory => Directory.CreateDirectory(directory).Exists);
                HardLink(cached, target);
                progress.ObjectDone(item.Size, hit);
            });
            mounts.Add(new BindMount(view, dataset.ContainerPath, ReadOnly: true));
        }
        // The view's list of cache objects: what eviction must leave alone while the view exists.
        await File.WriteAllLinesAsync(Path.Combine(ViewsOf(jobId), InUseFile), used.Keys.Order(StringComparer.Ordinal), cancellationToken);
        if (pending.Count > 0)
            DatasetStreams.WritePlan(ViewsOf(jobId), new DatasetStreamPlan(jobId, pending));
        return (mounts, progress.Finish() with { StreamPending = pending.Count, StreamPendingBytes = pending.Sum(item => item.Size) });
    }

    /// <summary>An order file is read whole from the cache: this bounds it (a million shard names fit).</summary>
    private const long MaximumOrderFileBytes = 64L << 20;

    /// <summary>
    /// The dataset's objects in the order its order file names them (one path per line, '#'
    /// comments and blank lines skipped): the order file itself first, then what it lists, then
    /// what it does not, in the listing's order. A name that is not an object of the dataset is
    /// skipped with a warning.
    /// </summary>
    private async Task<List<KeyValuePair<string, string>>> OrderedByFileAsync(DatasetMount dataset, string orderFile, List<KeyValuePair<string, string>> listed, Dictionary<string, StoredObject> byKey, IObjectStore store, ObjectFetcher fetcher, Progress progress, CancellationToken cancellationToken)
    {
        var entry = listed.FirstOrDefault(pair => pair.Value == orderFile);
        if (entry.Key is null)
            throw new BuildFailureException($"{DatasetDeclaration.Variable} line {dataset.Line}: the order file '{orderFile}' is not an object of {dataset.Source}.");
        if (byKey[entry.Key].Size > MaximumOrderFileBytes)
            throw new BuildFailureException($"{DatasetDeclaration.Variable} line {dataset.Line}: the order file '{orderFile}' has {byKey[entry.Key].Size} bytes; at most {MaximumOrderFileBytes >> 20} MiB are read.");
        var (cached, _) = await EnsureCachedAsync(dataset.Source, byKey[entry.Key], store, fetcher, progress.BytesFetched, cancellationToken);
        var byPath = listed.ToDictionary(pair => pair.Value, StringComparer.Ordinal);
        var ordered = new List<KeyValuePair<string, string>> { entry };
        var taken = new HashSet<string>(StringComparer.Ordinal) { orderFile };
        var unknown = 0;
        foreach (var line in File.ReadLines(cached))
        {
            var name = line.Trim();
            if (name.Length == 0 || name.StartsWith('#'))
                continue;
            if (!byPath.TryGetValue(name, out var pair))
                unknown++;
            else if (taken.Add(name))
                ordered.Add(pair);
        }
        if (unknown > 0)
            log($"WARNING: {dataset.Source}: {unknown} names in the order file '{Printable.Of(orderFile)}' are not objects of the dataset; they are skipped.");
        ordered.AddRange(listed.Where(pair => !taken.Contains(pair.Value)));
        return ordered;
    }

    /// <summary>
    /// A streamed dataset's objects in their order: the first ones, until there are
    /// datasets.stream_first_objects of them and datasets.stream_first_size bytes, come before
    /// the job starts; the rest after.
    /// </summary>
    private static (List<KeyValuePair<string, string>> Head, List<KeyValuePair<string, string>> Later) SplitForStream(IEnumerable<KeyValuePair<string, string>> ordered, Dictionary<string, StoredObject> byKey, DatasetSettings streaming)
    {
        var head = new List<KeyValuePair<string, string>>();
        var rest = new List<KeyValuePair<string, string>>();
        long bytes = 0;
        foreach (var pair in ordered)
        {
            if (head.Count >= streaming.StreamFirstObjects && bytes >= streaming.StreamFirstBytes)
            {
                rest.Add(pair);
                continue;
            }
            head.Add(pair);
            bytes += byKey[pair.Key].Size;
        }
        return (head, rest);
    }

    /// <summary>
    /// Fetches one object into the cache unless it is there, and links it into a view: the
    /// link appears at once, pointing at the whole, verified file. For the stream fetcher.
    /// </summary>
    public async Task LinkIntoViewAsync(DatasetSource source, StoredObject item, IObjectStore store, ObjectFetcher fetcher, string view, string relative, Action<long> bytesFetched, CancellationToken cancellationToken)
    {
        Directory.CreateDirectory(ObjectsDir);
        Directory.CreateDirectory(LocksDir);
        var (cached, _) = await EnsureCachedAsync(source, item, store, fetcher, bytesFetched, cancellationToken);
        // A view removed under the fetcher (cleanup, gc) is never created again by a link into it.
        if (!Directory.Exists(view))
            throw new DirectoryNotFoundException($"the view {view} is gone");
        var target = Path.Combine(view, relative);
        Directory.CreateDirectory(Path.GetDirectoryName(target)!);
        HardLink(cached, target);
    }

    private const string InUseFile = "objects-in-use.txt";
    private const string KeySuffix = ".key";

    /// <summary>
    /// Adds what this instance did since the last call to the host's counters (where metrics are
    /// kept): once per materialisation, and now and then by the stream fetcher, never per object.
    /// </summary>
    public void FlushCounts()
    {
        var misses = Interlocked.Exchange(ref _misses, 0);
        MetricCounters.Add(stateDir,
            (HostMetrics.CacheHits, Interlocked.Exchange(ref _hits, 0)),
            (HostMetrics.CacheMisses, misses),
            (HostMetrics.FetchedBytes, Interlocked.Exchange(ref _fetchedBytes, 0)),
            // Each miss leaves one more complete object in the cache; eviction recounts both.
            (HostMetrics.CacheObjects, misses),
            (HostMetrics.CacheBytes, Interlocked.Exchange(ref _missBytes, 0)));
    }

    /// <summary>One cached object, for the admin listing.</summary>
    public sealed record CachedObject(string Name, string Source, long Size, DateTime LastUsedUtc, bool InUse);

    /// <summary>Every complete object of the cache, with its source, size, last use and whether a live view uses it.</summary>
    public IReadOnlyList<CachedObject> List()
    {
        if (!Directory.Exists(ObjectsDir))
            return [];
        var inUse = ObjectsInUse();
        return new DirectoryInfo(ObjectsDir).EnumerateFiles()
            .Where(file => file.Extension is not (".part" or ".ranges" or ".key"))
            .Select(file =>
            {
                var keyFile = file.FullName + KeySuffix;
                var source = File.Exists(keyFile) ? File.ReadAllText(keyFile).Trim() : "(unknown)";
                return new CachedObject(file.Name, source, file.Length, file.LastAccessTimeUtc, inUse.Contains(file.Name));
            })
            .OrderBy(item => item.Source, StringComparer.Ordinal)
            .ToList();
    }

    /// <summary>The job ids with a dataset view on this host.</summary>
    public IReadOnlyList<string> Views() =>
        Directory.Exists(Path.Combine(Root, "views"))
            ? Directory.GetDirectories(Path.Combine(Root, "views")).Select(Path.GetFileName).OfType<string>().Order().ToList()
            : [];

    private HashSet<string> ObjectsInUse()
    {
        var inUse = new HashSet<string>(StringComparer.Ordinal);
        var viewsRoot = Path.Combine(Root, "views");
        if (Directory.Exists(viewsRoot))
        {
            foreach (var list in Directory.EnumerateFiles(viewsRoot, InUseFile, SearchOption.AllDirectories))
                inUse.UnionWith(File.ReadLines(list));
        }
        return inUse;
    }

    /// <summary>Objects used more recently than this are never evicted: a job may be linking them right now.</summary>
    public static readonly TimeSpan EvictionQuietPeriod = TimeSpan.FromMinutes(10);

    /// <summary>
    /// Trims the cache to <paramref name="maxBytes"/>, least recently used first. An object listed
    /// by any job's view, or used within the quiet period, stays. Returns the bytes removed.
    /// </summary>
    public long Evict(long maxBytes, DateTime now)
    {
        if (!Directory.Exists(ObjectsDir))
            return 0;
        var inUse = ObjectsInUse();
        var objects = new DirectoryInfo(ObjectsDir).EnumerateFiles()
            .Where(file => file.Extension is not (".part" or ".ranges" or ".key"))
            .ToList();
        var total = objects.Sum(file => file.Length);
        long removed = 0;
        var evicted = 0;
        foreach (var file in objects.OrderBy(file => file.LastAccessTimeUtc))
        {
            if (total - removed <= maxBytes)
                break;
            if (inUse.Contains(file.Name) || now - file.LastAccessTimeUtc < EvictionQuietPeriod)
                continue;
            var size = file.Length;
            file.Delete();
            File.Delete(file.FullName + KeySuffix);
            removed += size;
            evicted++;
        }
        // Eviction has just looked at every object: the cache's size in the metrics is set from
        // that, whatever the increments since (objects removed by hand, fetches that failed).
        if (MetricCounters.AreKept(stateDir))
        {
            MetricCounters.Update(stateDir, totals =>
            {
                totals[HostMetrics.CacheBytes] = total - removed;
                totals[HostMetrics.CacheObjects] = objects.Count - evicted;
                totals[HostMetrics.CacheEvictions] = totals.GetValueOrDefault(HostMetrics.CacheEvictions) + evicted;
                totals[HostMetrics.CacheEvictedBytes] = totals.GetValueOrDefault(HostMetrics.CacheEvictedBytes) + removed;
            });
        }
        return removed;
    }

    public void RemoveViews(long jobId)
    {
        var views = ViewsOf(jobId);
        DatasetStreams.Stop(views, jobId);
        if (Directory.Exists(views))
            Directory.Delete(views, recursive: true);
    }

    private static async Task<List<StoredObject>> ListAsync(IObjectStore store, DatasetMount dataset, CancellationToken cancellationToken)
    {
        var source = dataset.Source;
        if (source.IsPrefix)
        {
            var listed = new List<StoredObject>();
            await foreach (var item in store.ListAsync(source.Bucket, source.Key, cancellationToken))
                listed.Add(item);
            if (listed.Count == 0)
                throw new BuildFailureException($"{DatasetDeclaration.Variable} line {dataset.Line}: '{source}' holds no objects.");
            return listed;
        }

        var single = await store.HeadAsync(source.Bucket, source.Key, cancellationToken)
            ?? throw new BuildFailureException($"{DatasetDeclaration.Variable} line {dataset.Line}: '{source}' does not exist.");
        if (dataset.EtagPin is { } pin && !string.Equals(pin, single.ETag, StringComparison.OrdinalIgnoreCase))
            throw new BuildFailureException($"{DatasetDeclaration.Variable} line {dataset.Line}: '{source}' has ETag {single.ETag}, not the pinned {pin}.");
        return [single];
    }

    /// <summary>The cached file for this object version, fetched first unless it is there; true when it was.</summary>
    private async Task<(string Path, bool Hit)> EnsureCachedAsync(DatasetSource source, StoredObject item, IObjectStore store, ObjectFetcher fetcher, Action<long> bytesFetched, CancellationToken cancellationToken)
    {
        var name = CacheName(source, item);
        var path = Path.Combine(ObjectsDir, name);
        if (IsComplete(path, item))
        {
            MarkUsed(path);
            Interlocked.Increment(ref _hits);
            return (path, true);
        }

        // One download per object version on the host: a second job waits on the lock, then
        // finds the file in place.
        using (await HostLock.AcquireAsync(LockFileOf(name), cancellationToken))
        {
            if (IsComplete(path, item))
            {
                Interlocked.Increment(ref _hits);
                return (path, true);
            }
            await fetcher.FetchAsync(store, source.Bucket, item, path, fetched =>
            {
                Interlocked.Add(ref _fetchedBytes, fetched);
                bytesFetched(fetched);
            }, cancellationToken);
            Interlocked.Increment(ref _misses);
            Interlocked.Add(ref _missBytes, item.Size);
            // Which object this is, for `gpu-executor datasets list`. The name is a hash of the
            // same text, so a key file already there says the same and is left alone.
            try
            {
                await using var keyFile = new FileStream(path + KeySuffix, FileMode.CreateNew, FileAccess.Write, FileShare.None, bufferSize: 1);
                await keyFile.WriteAsync(Encoding.UTF8.GetBytes($"{source.Store}://{source.Bucket}/{item.Key}\n"), cancellationToken);
            }
            catch (IOException) when (File.Exists(path + KeySuffix))
            {
            }
            return (path, false);
        }
    }

    /// <summary>
    /// Objects share 4,096 lock files by the first three digits of their name: a lock file per
    /// object would leave one file behind for every object ever fetched, and creating it is a
    /// directory operation that concurrent fetches contend on. Two objects that share a lock
    /// are fetched one after the other, which at 32 in flight happens to about 1 in 130.
    /// </summary>
    private string LockFileOf(string name) => Path.Combine(LocksDir, name[..3] + ".lock");

    /// <summary>Eviction goes by last use; set it explicitly, whatever the file system's atime policy.</summary>
    private static void MarkUsed(string path)
    {
        try
        {
            File.SetLastAccessTimeUtc(path, DateTime.UtcNow);
        }
        catch (Exception error) when (error is IOException or UnauthorizedAccessException)
        {
            // Only eviction order suffers.
        }
    }

    private static bool IsComplete(string path, StoredObject item)
    {
        var info = new FileInfo(path);
        return info.Exists && info.Length == item.Size;
    }

    /// <summary>SHA-256 of (store, bucket, key, ETag): a new version of an object is a new file.</summary>
    public static string CacheName(DatasetSource source, StoredObject item) =>
        Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes($"{source.Store}\n{source.Bucket}\n{item.Key}\n{item.ETag}")));

    private static void HardLink(string existing, string link)
    {
        if (File.Exists(link))
            File.Delete(link);
        if (HardLinks.Create(existing, link) is not 0 and var errno)
            throw new SystemFailureException($"could not link '{link}' to the cached object '{existing}' (errno {errno}); the dataset views and the cache must be on one file system (both live under state_dir).");
    }

    /// <summary>Progress lines for the job log: the log is not a TTY, so periodic lines, not a bar.</summary>
    private sealed class Progress(Action<string> log)
    {
        private readonly Stopwatch _clock = Stopwatch.StartNew();
        private readonly Lock _lock = new();
        private TimeSpan _lastReport;
        private int _planned, _done, _hits, _quarantined;
        private long _plannedBytes, _doneBytes, _fetchedBytes;

        public void AddPlanned(int objects, long bytes, int quarantined)
        {
            lock (_lock)
            {
                _planned += objects;
                _plannedBytes += bytes;
                _quarantined += quarantined;
            }
        }

        public void BytesFetched(long bytes) => Interlocked.Add(ref _fetchedBytes, bytes);

        public void ObjectDone(long bytes, bool hit)
        {
            lock (_lock)
            {
                _done++;
                _doneBytes += bytes;
                if (hit)
                    _hits++;
                if (_clock.Elapsed - _lastReport < ProgressInterval)
                    return;
                _lastReport = _clock.Elapsed;
                var fetched = Interlocked.Read(ref _fetchedBytes);
                var rate = fetched / Math.Max(_clock.Elapsed.TotalSeconds, 0.001);
                var remaining = _plannedBytes - _doneBytes;
                var eta = rate > 0 ? TimeSpan.FromSeconds(remaining / rate) : TimeSpan.Zero;
                log($"  {_done}/{_planned} objects, {Mib(_doneBytes)}/{Mib(_plannedBytes)} MiB, fetching at {Mib((long)rate)} MiB/s, ETA {eta:hh\\:mm\\:ss}, {_hits} from the cache");
            }
        }

        public Summary Finish()
        {
            lock (_lock)
                return new Summary(_done, _hits, Interlocked.Read(ref _fetchedBytes), _doneBytes, _quarantined);
        }

        private static string Mib(long bytes) => (bytes / 1048576.0).ToString("0.0", CultureInfo.InvariantCulture);
    }
}
