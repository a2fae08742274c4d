using System.Globalization;
using System.Text;
using GpuExecutor.Outcomes;
using GpuExecutor.Storage;
using Polly;

namespace GpuExecutor.Checkpoints;

/// <summary>The points of a commit at which a crash must leave the previous generation restorable (tests stop there).</summary>
public enum CommitStep
{
    BlobsUploaded,
    ManifestWritten,
    LatestWritten,
}

/// <summary>What a commit did.</summary>
public sealed record CommitResult(long Generation, int UploadedFiles, long UploadedBytes, long TotalBytes);

/// <summary>
/// One run's checkpoints in an object store:
///   PREFIX runs/RUN-KEY/blobs/SHA256            file contents, by hash
///   PREFIX runs/RUN-KEY/manifests/GENERATION.json  one per generation: path → sha256, size, mode
///   PREFIX runs/RUN-KEY/LATEST                   the newest committed generation's number
///   PREFIX runs/RUN-KEY/bad-generations/GENERATION.json  a generation restore found corrupt
///   PREFIX runs/RUN-KEY/segments/JOB.json        the run's history, a record per job
/// A commit writes in that order, blobs first and LATEST last, so a crash anywhere leaves LATEST
/// naming a generation whose manifest and blobs are all there. Nothing relies on server-side
/// copy or conditional writes, which s3rver (and some S3 clones) get wrong. Manifests name the
/// <paramref name="host"/> that committed them, for runs that move between hosts.
/// </summary>
public sealed class CheckpointRepository(IObjectStore store, string bucket, string prefix, string runKey, Action<string> log, string? host = null)
{
    private const int ParallelUploads = 4;
    private const long LargestManifest = 64L << 20;

    private readonly ResiliencePipeline _retry = StoreRetry.Create(log);

    public string RunKey => runKey;
    private string RunPrefix => $"{prefix}runs/{runKey}/";
    private string BlobsPrefix => RunPrefix + "blobs/";
    private string ManifestsPrefix => RunPrefix + "manifests/";
    private string LatestKey => RunPrefix + "LATEST";
    private string BadGenerationsPrefix => RunPrefix + "bad-generations/";
    private string BadGenerationKey(long generation) => BadGenerationsPrefix + generation.ToString("D12", CultureInfo.InvariantCulture) + ".json";
    private string BlobKey(string sha256) => BlobsPrefix + sha256;
    private string ManifestKey(long generation) => ManifestsPrefix + generation.ToString("D12", CultureInfo.InvariantCulture) + ".json";

    /// <summary>The run keys with checkpoints under this prefix.</summary>
    public static async Task<IReadOnlyList<string>> ListRunsAsync(IObjectStore store, string bucket, string prefix, CancellationToken cancellationToken)
    {
        var runs = new SortedSet<string>(StringComparer.Ordinal);
        await foreach (var item in store.ListAsync(bucket, prefix + "runs/", cancellationToken))
        {
            var rest = item.Key[(prefix.Length + "runs/".Length)..];
            var slash = rest.IndexOf('/');
            if (slash > 0 && rest[(slash + 1)..] == "LATEST")
                runs.Add(rest[..slash]);
        }
        return runs.ToList();
    }

    /// <summary>The generation LATEST names; null when the run has never committed.</summary>
    public async Task<long?> ReadLatestAsync(CancellationToken cancellationToken)
    {
        var bytes = await ReadSmallAsync(LatestKey, 64, cancellationToken);
        if (bytes is null)
            return null;
        var text = Encoding.ASCII.GetString(bytes).Trim();
        return long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var generation) && generation > 0
            ? generation
            : throw new BuildFailureException($"the LATEST pointer of checkpoint run '{runKey}' holds '{text}', not a generation number; pin a generation with CHECKPOINT_RESTORE.");
    }

    /// <summary>Every generation with a manifest, oldest first (committed or not: LATEST says which is).</summary>
    public async Task<IReadOnlyList<long>> ListGenerationsAsync(CancellationToken cancellationToken)
    {
        var generations = new List<long>();
        await foreach (var item in store.ListAsync(bucket, ManifestsPrefix, cancellationToken))
        {
            var name = item.Key[ManifestsPrefix.Length..];
            if (name.EndsWith(".json", StringComparison.Ordinal) && long.TryParse(name[..^5], NumberStyles.None, CultureInfo.InvariantCulture, out var generation))
                generations.Add(generation);
        }
        generations.Sort();
        return generations;
    }

    public async Task<CheckpointManifest> ReadManifestAsync(long generation, CancellationToken cancellationToken)
    {
        var bytes = await ReadSmallAsync(ManifestKey(generation), LargestManifest, cancellationToken)
            ?? throw new BuildFailureException($"checkpoint run '{runKey}' has no generation {generation}.");
        return CheckpointManifest.Parse(bytes, runKey, generation);
    }

    /// <summary>Opens a blob for restore; the caller verifies its hash.</summary>
    /// <summary>
    /// A blob's bytes as the store holds them, by an explicit range: the SHA-256 the caller
    /// computes is the check. Read whole, AWSSDK.S3 would check the bytes against the object's
    /// MD5 itself and throw its own error on a mismatch, before anyone could say what came back.
    /// </summary>
    public Task<Stream> OpenBlobAsync(string sha256, long size, CancellationToken cancellationToken) =>
        store.OpenReadAsync(bucket, BlobKey(sha256), 0, size > 0 ? size : null, cancellationToken);

    /// <summary>The blob's identity in the store, for fetchers that want its size and ETag.</summary>
    public (IObjectStore Store, string Bucket, string Key) BlobLocation(string sha256) => (store, bucket, BlobKey(sha256));

    /// <summary>
    /// Commits a snapshot as the next generation: missing blobs, then the manifest, then LATEST,
    /// then retention. <paramref name="afterStep"/> lets tests stop the commit at each point.
    /// </summary>
    public async Task<CommitResult> CommitAsync(
        CheckpointSnapshot snapshot,
        long jobId,
        int keepGenerations,
        Func<CommitStep, Task>? afterStep,
        CancellationToken cancellationToken)
    {
        var stored = new HashSet<string>(StringComparer.Ordinal);
        // A blob a restore found rotten is sent again whenever a snapshot has its content, which
        // overwrites the bad bytes: the new generation must not lean on them.
        var bad = await ReadBadGenerationsAsync(cancellationToken);
        var rotten = bad.Values.SelectMany(generation => generation.BadBlobs).ToHashSet(StringComparer.Ordinal);
        var generations = await _retry.ExecuteAsync(async token =>
        {
            stored.Clear();
            await foreach (var item in store.ListAsync(bucket, BlobsPrefix, token))
            {
                var sha256 = item.Key[BlobsPrefix.Length..];
                if (!rotten.Contains(sha256))
                    stored.Add(sha256 + ":" + item.Size.ToString(CultureInfo.InvariantCulture));
            }
            return await ListGenerationsAsync(token);
        }, cancellationToken);
        var latest = await _retry.ExecuteAsync(async token => await ReadLatestOrNullAsync(token), cancellationToken);
        // Past every manifest, committed or not: a manifest a crash left behind is never reused.
        var generation = Math.Max(generations.Count > 0 ? generations[^1] : 0, latest ?? 0) + 1;

        // Unchanged files are already there under their hash (and size, against a blob that a
        // crash cut short): only new content travels.
        var missing = snapshot.Files
            .Where(file => !stored.Contains(file.Sha256 + ":" + file.Size.ToString(CultureInfo.InvariantCulture)))
            .DistinctBy(file => file.Sha256)
            .ToList();
        long uploaded = 0;
        // Enough files to fill every upload stream: each may travel whole.
        var manyFilesInParallel = missing.Count >= ParallelUploads;
        await Parallel.ForEachAsync(missing, new ParallelOptions { MaxDegreeOfParallelism = ParallelUploads, CancellationToken = cancellationToken }, async (file, token) =>
        {
            await _retry.ExecuteAsync(async attemptToken =>
            {
                // Staged files are the snapshot's private copies, never written again.
                await store.PutImmutableFileAsync(bucket, BlobKey(file.Sha256), file.StagedPath, file.Size, attemptToken, manyFilesInParallel);
                var landed = await store.HeadAsync(bucket, BlobKey(file.Sha256), attemptToken);
                if (landed?.Size != file.Size)
                    throw new ObjectStoreException($"blob {file.Sha256} of '{file.Path}' landed with {landed?.Size.ToString(CultureInfo.InvariantCulture) ?? "no"} bytes instead of {file.Size}.", transient: true);
            }, token);
            Interlocked.Add(ref uploaded, file.Size);
        });
        await Step(afterStep, CommitStep.BlobsUploaded);

        var manifest = new CheckpointManifest(
            CheckpointManifest.CurrentFormat,
            runKey,
            generation,
            jobId,
            DateTimeOffset.UtcNow,
            snapshot.Files.Select(file => new CheckpointFile(file.Path, file.Sha256, file.Size, file.Mode)).ToList())
        {
            Host = host,
        };
        await _retry.ExecuteAsync(async token => await store.PutBytesAsync(bucket, ManifestKey(generation), manifest.ToJson(), token), cancellationToken);
        await Step(afterStep, CommitStep.ManifestWritten);

        await _retry.ExecuteAsync(async token => await store.PutBytesAsync(bucket, LatestKey, Encoding.ASCII.GetBytes(generation.ToString(CultureInfo.InvariantCulture) + "\n"), token), cancellationToken);
        await Step(afterStep, CommitStep.LatestWritten);

        try
        {
            await ApplyRetentionAsync(keepGenerations, collectOrphans: false, bad, cancellationToken);
        }
        catch (ObjectStoreException error)
        {
            // The generation is committed; what retention left is collected by the next commit.
            log($"checkpoint retention of run '{runKey}' did not finish: {error.Message}");
        }
        return new CommitResult(generation, missing.Count, uploaded, manifest.TotalBytes);
    }

    private static Task Step(Func<CommitStep, Task>? afterStep, CommitStep step) => afterStep?.Invoke(step) ?? Task.CompletedTask;

    /// <summary>What retention removed.</summary>
    public sealed record RetentionResult(IReadOnlyList<long> DeletedGenerations, int DeletedBlobs, long DeletedBytes);

    /// <summary>
    /// Keeps the newest <paramref name="keep"/> committed generations (never the one LATEST names)
    /// and deletes the blobs only deleted generations referenced. Bad generations are neither
    /// counted nor deleted: they stay, with their blobs, for an admin to inspect. A blob no manifest ever referenced
    /// may belong to a commit that is uploading right now, so only <paramref name="collectOrphans"/>
    /// (the admin's explicit choice, with no job of the run running) deletes those.
    /// </summary>
    public async Task<RetentionResult> ApplyRetentionAsync(int keep, bool collectOrphans, CancellationToken cancellationToken) =>
        await ApplyRetentionAsync(keep, collectOrphans, await ReadBadGenerationsAsync(cancellationToken), cancellationToken);

    /// <summary>Retention with the run's bad generations already read (a commit has just read them).</summary>
    private async Task<RetentionResult> ApplyRetentionAsync(int keep, bool collectOrphans, IReadOnlyDictionary<long, BadGeneration> bad, CancellationToken cancellationToken)
    {
        var latest = await ReadLatestOrNullAsync(cancellationToken);
        if (latest is null)
            return new RetentionResult([], 0, 0);
        var generations = await ListGenerationsAsync(cancellationToken);
        // Manifests past LATEST belong to a commit in flight (or a crashed one): not ours to judge.
        var committed = generations.Where(generation => generation <= latest && !bad.ContainsKey(generation)).ToList();
        var doomed = committed.Take(Math.Max(0, committed.Count - Math.Max(keep, 1))).Where(generation => generation != latest).ToList();
        if (doomed.Count == 0 && !collectOrphans)
            return new RetentionResult([], 0, 0);

        var kept = new HashSet<string>(StringComparer.Ordinal);
        foreach (var generation in generations.Except(doomed))
        {
            if (bad.TryGetValue(generation, out var badGeneration))
            {
                kept.UnionWith(badGeneration.BadBlobs);
                // Its manifest may be what is bad: then the record's blobs are all there is to keep.
                if (await TryReadManifestAsync(generation, cancellationToken) is { } damaged)
                    kept.UnionWith(damaged.Files.Select(file => file.Sha256));
                continue;
            }
            foreach (var file in (await ReadManifestAsync(generation, cancellationToken)).Files)
                kept.Add(file.Sha256);
        }
        var candidates = new HashSet<string>(StringComparer.Ordinal);
        foreach (var generation in doomed)
        {
            foreach (var file in (await ReadManifestAsync(generation, cancellationToken)).Files)
                candidates.Add(file.Sha256);
        }

        // Manifests first: a blob is deleted only once no manifest that names it is left.
        foreach (var generation in doomed)
            await _retry.ExecuteAsync(async token => await store.DeleteAsync(bucket, ManifestKey(generation), token), cancellationToken);

        var deletedBlobs = 0;
        long deletedBytes = 0;
        await foreach (var blob in store.ListAsync(bucket, BlobsPrefix, cancellationToken))
        {
            var sha = blob.Key[BlobsPrefix.Length..];
            if (kept.Contains(sha) || !(candidates.Contains(sha) || collectOrphans))
                continue;
            await _retry.ExecuteAsync(async token => await store.DeleteAsync(bucket, blob.Key, token), cancellationToken);
            deletedBlobs++;
            deletedBytes += blob.Size;
        }
        return new RetentionResult(doomed, deletedBlobs, deletedBytes);
    }

    /// <summary>Problems with one generation: missing or wrongly sized blobs; with <paramref name="deep"/>, also wrong hashes.</summary>
    public async Task<IReadOnlyList<string>> VerifyAsync(long generation, bool deep, CancellationToken cancellationToken)
    {
        var manifest = await ReadManifestAsync(generation, cancellationToken);
        var problems = new List<string>();
        foreach (var file in manifest.Files.DistinctBy(file => file.Sha256))
        {
            var blob = await store.HeadAsync(bucket, BlobKey(file.Sha256), cancellationToken);
            if (blob is null)
            {
                problems.Add($"{file.Path}: blob {file.Sha256} is missing");
                continue;
            }
            if (blob.Size != file.Size)
            {
                problems.Add($"{file.Path}: blob {file.Sha256} has {blob.Size} bytes, the manifest says {file.Size}");
                continue;
            }
            if (!deep)
                continue;
            await using var body = await OpenBlobAsync(file.Sha256, file.Size, cancellationToken);
            var actual = Convert.ToHexStringLower(await System.Security.Cryptography.SHA256.HashDataAsync(body, cancellationToken));
            if (actual != file.Sha256)
                problems.Add($"run {runKey} generation {generation}: {file.Path}: blob expected sha256 {file.Sha256}, actual sha256 {actual}");
        }
        return problems;
    }

    /// <summary>The run's bad generations by number, as restores recorded them.</summary>
    public async Task<IReadOnlyDictionary<long, BadGeneration>> ReadBadGenerationsAsync(CancellationToken cancellationToken)
    {
        var keys = await _retry.ExecuteAsync(async token =>
        {
            var found = new List<(long Generation, string Key)>();
            await foreach (var item in store.ListAsync(bucket, BadGenerationsPrefix, token))
            {
                var name = item.Key[BadGenerationsPrefix.Length..];
                if (name.EndsWith(".json", StringComparison.Ordinal) && long.TryParse(name[..^5], NumberStyles.None, CultureInfo.InvariantCulture, out var generation))
                    found.Add((generation, item.Key));
            }
            return found;
        }, cancellationToken);
        var bad = new SortedDictionary<long, BadGeneration>();
        foreach (var (generation, key) in keys)
        {
            var bytes = await _retry.ExecuteAsync(async token => await ReadSmallAsync(key, BadGeneration.LargestRecord, token), cancellationToken);
            // The key alone marks the generation bad; a damaged record only loses the story.
            bad[generation] = (bytes is null ? null : BadGeneration.Parse(bytes)) is { Generation: var named } record && named == generation
                ? record
                : new BadGeneration(generation, "(its record is unreadable)", [], DateTimeOffset.MinValue, "?");
        }
        return bad;
    }

    public async Task RecordBadGenerationAsync(BadGeneration bad, CancellationToken cancellationToken) =>
        await _retry.ExecuteAsync(async token => await store.PutBytesAsync(bucket, BadGenerationKey(bad.Generation), bad.ToJson(), token), cancellationToken);

    /// <summary>The generation's manifest, or null when it is missing or refused.</summary>
    public async Task<CheckpointManifest?> TryReadManifestAsync(long generation, CancellationToken cancellationToken)
    {
        try
        {
            return await ReadManifestAsync(generation, cancellationToken);
        }
        catch (BuildFailureException)
        {
            return null;
        }
    }

    /// <summary>
    /// A small record kept beside the run's LATEST under <paramref name="name"/> (the
    /// continuation chain, say), so it follows the run to any host; null when there is none.
    /// </summary>
    public async Task<byte[]?> ReadRunRecordAsync(string name, int maximumBytes, CancellationToken cancellationToken) =>
        await _retry.ExecuteAsync(async token => await ReadSmallAsync(RunPrefix + name, maximumBytes, token), cancellationToken);

    /// <summary>The names (as <see cref="ReadRunRecordAsync"/> takes them) of the run's records under <paramref name="folder"/> ("segments/").</summary>
    public async Task<IReadOnlyList<string>> ListRunRecordsAsync(string folder, CancellationToken cancellationToken) =>
        await _retry.ExecuteAsync(async token =>
        {
            var names = new List<string>();
            await foreach (var item in store.ListAsync(bucket, RunPrefix + folder, token))
                names.Add(item.Key[RunPrefix.Length..]);
            return names;
        }, cancellationToken);

    /// <summary>A file under the run (a job's whole log), streamed from disk rather than held in memory.</summary>
    public async Task WriteRunFileAsync(string name, string path, CancellationToken cancellationToken) =>
        await _retry.ExecuteAsync(async token => await store.PutFileAsync(bucket, RunPrefix + name, path, new FileInfo(path).Length, token), cancellationToken);

    /// <summary>A file under the run, to read as a stream; null when there is none.</summary>
    public async Task<Stream?> OpenRunFileAsync(string name, CancellationToken cancellationToken) =>
        await _retry.ExecuteAsync(async token => await store.HeadAsync(bucket, RunPrefix + name, token) is null ? null : await store.OpenReadAsync(bucket, RunPrefix + name, 0, null, token), cancellationToken);

    public async Task WriteRunRecordAsync(string name, byte[] content, CancellationToken cancellationToken) =>
        await _retry.ExecuteAsync(async token => await store.PutBytesAsync(bucket, RunPrefix + name, content, token), cancellationToken);

    private async Task<long?> ReadLatestOrNullAsync(CancellationToken cancellationToken)
    {
        try
        {
            return await ReadLatestAsync(cancellationToken);
        }
        catch (BuildFailureException)
        {
            return null;
        }
    }

    /// <summary>A small object's bytes, or null when there is no such object.</summary>
    private async Task<byte[]?> ReadSmallAsync(string key, long largest, CancellationToken cancellationToken)
    {
        var head = await store.HeadAsync(bucket, key, cancellationToken);
        if (head is null)
            return null;
        if (head.Size > largest)
            throw new BuildFailureException($"'{key}' in the checkpoint store is {head.Size} bytes, more than the {largest} a checkpoint's metadata may take.");
        await using var body = await store.OpenReadAsync(bucket, key, 0, null, cancellationToken);
        using var buffer = new MemoryStream();
        await body.CopyToAsync(buffer, cancellationToken);
        return buffer.ToArray();
    }
}
