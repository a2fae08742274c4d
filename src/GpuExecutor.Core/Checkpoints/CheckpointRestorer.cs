using System.Globalization;
using GpuExecutor.Datasets;
using GpuExecutor.HostFiles;
using GpuExecutor.Outcomes;
using GpuExecutor.Storage;

namespace GpuExecutor.Checkpoints;

/// <summary>What a restore put in place, and the newer generations it passed over as bad.</summary>
public sealed record RestoreResult(long Generation, long FromJobId, DateTimeOffset CommittedAt, int Files, long Bytes, long DownloadedBytes)
{
    /// <summary>The host that committed the generation, where its manifest says.</summary>
    public string? FromHost { get; init; }

    /// <summary>True when the work directory already held the generation, untouched since this host's agent committed it, and stayed as it was.</summary>
    public bool KeptInPlace { get; init; }

    public IReadOnlyList<SkippedGeneration> Skipped { get; init; } = [];
}

/// <summary>A newer generation restore did not use: found bad now, or recorded bad before.</summary>
public sealed record SkippedGeneration(long Generation, string Reason, bool FoundNow);

/// <summary>
/// Materialises one generation into the run's work directory. The generation is assembled in a
/// fresh directory that only the executor writes, every file checked against the manifest's
/// SHA-256, and only then swapped in for the old work directory: the job (which could have left
/// symlinks in the old one) never gets a say in where restore writes, and a failed restore leaves
/// the old directory as it was.
///
/// A generation that turns out corrupt (its manifest missing or refused, a blob missing, short or
/// hashing wrong) is recorded as bad in the store, and restore falls back to the next older one:
/// otherwise every retry of the run would fail the same way. <paramref name="foundBy"/> says who
/// found it ("job 42 on gpu-host-3") in that record.
/// </summary>
public sealed class CheckpointRestorer(CheckpointRepository repository, RunDirectories directories, Action<string> log, string foundBy = "an admin's restore")
{
    private const int ParallelFiles = 4;
    private const int LargestBadBlobList = 500;

    /// <summary>
    /// Restores <paramref name="pinned"/> exactly (failing if it is bad), or else the newest
    /// committed generation that is whole. Null when the run has nothing committed (the work
    /// directory is then empty).
    /// </summary>
    public async Task<RestoreResult?> RestoreAsync(long? pinned, CancellationToken cancellationToken)
    {
        if (pinned is { } exact)
            return await RestoreGenerationAsync(exact, await repository.ReadManifestAsync(exact, cancellationToken), cancellationToken);
        if (await repository.ReadLatestAsync(cancellationToken) is not { } latest)
        {
            ReplaceWork(null);
            return null;
        }
        var bad = await repository.ReadBadGenerationsAsync(cancellationToken);
        // LATEST first, then older committed generations; manifests past LATEST were never committed.
        var candidates = (await repository.ListGenerationsAsync(cancellationToken)).Where(generation => generation < latest).Reverse().Prepend(latest);
        var skipped = new List<SkippedGeneration>();
        foreach (var generation in candidates)
        {
            if (bad.TryGetValue(generation, out var known))
            {
                skipped.Add(new SkippedGeneration(generation, known.Reason, FoundNow: false));
                continue;
            }
            try
            {
                var manifest = await ReadManifestOfCommittedAsync(generation, cancellationToken);
                return await RestoreGenerationAsync(generation, manifest, cancellationToken) with { Skipped = skipped };
            }
            catch (CorruptGenerationException corrupt)
            {
                var badBlobs = corrupt.BadBlobs.Take(LargestBadBlobList).ToList();
                await repository.RecordBadGenerationAsync(new BadGeneration(generation, corrupt.Reason, badBlobs, DateTimeOffset.UtcNow, foundBy), cancellationToken);
                log($"checkpoint generation {generation} of run '{repository.RunKey}' is corrupt and is now recorded as bad: {corrupt.Reason}");
                skipped.Add(new SkippedGeneration(generation, corrupt.Reason, FoundNow: true));
            }
        }
        throw new BuildFailureException(
            $"no committed generation of checkpoint run '{repository.RunKey}' can be restored: " +
            string.Join("; ", skipped.Select(skip => $"generation {skip.Generation}: {skip.Reason}")) +
            ". Set CHECKPOINT_RESTORE=off to start the run afresh, or repair the store (`gpu-executor checkpoints verify`).");
    }

    /// <summary>A committed generation's manifest; missing or refused, the generation is corrupt.</summary>
    private async Task<CheckpointManifest> ReadManifestOfCommittedAsync(long generation, CancellationToken cancellationToken)
    {
        try
        {
            return await repository.ReadManifestAsync(generation, cancellationToken);
        }
        catch (BuildFailureException refused)
        {
            throw new CorruptGenerationException(generation, refused.Message, [], refused);
        }
    }

    private async Task<RestoreResult> RestoreGenerationAsync(long chosen, CheckpointManifest manifest, CancellationToken cancellationToken)
    {
        // The warm hand-over: what the agent committed from this very directory is still there.
        if (LocalCommit.Read(directories) is { } local && local.StillHolds(manifest, directories.Work))
            return new RestoreResult(chosen, manifest.JobId, manifest.CommittedAt, manifest.Files.Count, manifest.TotalBytes, 0) { FromHost = manifest.Host, KeptInPlace = true };

        ResetDirectory(directories.RestoreStaging);
        long downloaded = 0;
        var fetcher = new ObjectFetcher(log);
        await Parallel.ForEachAsync(manifest.Files, new ParallelOptions { MaxDegreeOfParallelism = ParallelFiles, CancellationToken = cancellationToken }, async (file, token) =>
        {
            // Safe by construction: the manifest's paths were checked (relative, no '..'), and the
            // staging directory is fresh and ours, so it holds no symlink to be led through.
            var target = Path.Combine(directories.RestoreStaging, file.Path);
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            if (!CopyFromWork(file, target))
            {
                await DownloadAsync(fetcher, chosen, file, target, token);
                Interlocked.Add(ref downloaded, file.Size);
            }
            File.SetUnixFileMode(target, (UnixFileMode)file.Mode | UnixFileMode.UserRead | UnixFileMode.UserWrite);
        });
        ReplaceWork(directories.RestoreStaging);
        return new RestoreResult(chosen, manifest.JobId, manifest.CommittedAt, manifest.Files.Count, manifest.TotalBytes, downloaded) { FromHost = manifest.Host };
    }

    /// <summary>
    /// A continuation on the same host usually finds the generation's files already in the work
    /// directory: copy (never link: the job may write to it) and keep the copy if it hashes right.
    /// </summary>
    private bool CopyFromWork(CheckpointFile file, string target)
    {
        var opened = NoFollowFiles.OpenRegularFile(directories.Work, file.Path);
        if (opened is not { } local)
            return false;
        using var handle = local.Handle;
        if (local.Status.Size != file.Size)
            return false;
        var (copied, sha256) = NoFollowFiles.CopyWithSha256(handle, target, startWriteback: false);
        if (copied == file.Size && sha256 == file.Sha256)
            return true;
        File.Delete(target);
        return false;
    }

    private async Task DownloadAsync(ObjectFetcher fetcher, long generation, CheckpointFile file, string target, CancellationToken cancellationToken)
    {
        var (store, bucket, key) = repository.BlobLocation(file.Sha256);
        var blob = await store.HeadAsync(bucket, key, cancellationToken)
            ?? throw new CorruptGenerationException(generation, $"file '{file.Path}': its blob {file.Sha256} is missing from the store", [file.Sha256]);
        if (blob.Size != file.Size)
            throw new CorruptGenerationException(generation, $"file '{file.Path}': its blob {file.Sha256} has {blob.Size} bytes, the manifest says {file.Size}", [file.Sha256]);
        string actual;
        var local = store.OpenLocalFile(bucket, key);
        if (local is not null)
        {
            // The local store: one pass that copies and hashes, rather than ranges written and
            // then read back for the hash.
            using (local)
                actual = NoFollowFiles.CopyWithSha256(local, target, startWriteback: false).Sha256;
        }
        else
        {
            // The fetcher brings large blobs as parallel ranges and checks their size; the SHA-256
            // it computes on the way is what ties the bytes to the manifest.
            var sha256 = await fetcher.FetchAsync(store, bucket, blob, target, _ => { }, cancellationToken, sha256: true, durable: false);
            actual = Convert.ToHexStringLower(sha256!);
        }
        if (actual != file.Sha256)
        {
            File.Delete(target);
            throw new CorruptGenerationException(generation, $"file '{file.Path}': blob expected sha256 {file.Sha256}, actual sha256 {actual}", [file.Sha256]);
        }
    }

    /// <summary>For a job that turned restore off: an empty work directory.</summary>
    public void StartEmpty() => ReplaceWork(null);

    /// <summary>Swaps <paramref name="replacement"/> (or a new empty directory) in as the work directory.</summary>
    private void ReplaceWork(string? replacement)
    {
        ResetDirectory(directories.Trash, create: false);
        if (Directory.Exists(directories.Work))
            Directory.Move(directories.Work, directories.Trash);
        if (replacement is null)
            Directory.CreateDirectory(directories.Work);
        else
            Directory.Move(replacement, directories.Work);
        // The job's user may not be root; the directory is reachable only through the run's
        // directory, which is the executor's alone.
        File.SetUnixFileMode(directories.Work, (UnixFileMode)0x1FF);
        ResetDirectory(directories.Trash, create: false);
    }

    /// <summary>Removes the directory (symlinks inside are unlinked, not followed) and, unless told otherwise, creates it empty.</summary>
    private static void ResetDirectory(string path, bool create = true)
    {
        if (Directory.Exists(path))
            Directory.Delete(path, recursive: true);
        if (create)
            Directory.CreateDirectory(path);
    }
}
