using System.Buffers;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using GpuExecutor.HostFiles;
using GpuExecutor.Outcomes;
using GpuExecutor.Storage;
using Polly;

namespace GpuExecutor.Datasets;

/// <summary>
/// Fetches one object into the cache, verified, and renamed into place only when complete.
/// Large objects come as parallel ranged GETs into a ".part" file, with a ".ranges" record of the
/// ranges done, so a killed download resumes where it stopped; small ones as one GET. Memory is
/// bounded by the ranges in flight, whatever the object's size.
/// </summary>
public sealed partial class ObjectFetcher
{
    // 32 MiB, not 16: s3rver spends about 15 ms of CPU on each GET whatever its length, on the
    // cores the download shares, and the MD5 that trails the ranges still finishes a range or two
    // after the last byte arrives.
    public const long RangeSize = 32L << 20;
    public const long RangedThreshold = 64L << 20;
    private const int ParallelRanges = 8;
    private const int ChunkSize = 1 << 20;

    private readonly ResiliencePipeline _retry;

    private readonly BandwidthLimit? _limit;

    /// <param name="limit">Shared by every fetch of this fetcher: a job's stream keeps to datasets.stream_max_rate.</param>
    public ObjectFetcher(Action<string> log, BandwidthLimit? limit = null)
    {
        _retry = StoreRetry.Create(log);
        _limit = limit;
    }

    /// <summary>The hashes a fetch computed on the way: MD5 (against a plain-MD5 ETag) and, when asked, SHA-256.</summary>
    private sealed record Digests(byte[]? Md5, byte[]? Sha256);

    /// <summary>
    /// Fetches the object into <paramref name="destination"/>; returns its SHA-256 when
    /// <paramref name="sha256"/> asks for it (computed on the way, not in a second pass). A
    /// <paramref name="durable"/> fetch (the dataset cache, which outlives reboots) is on disk
    /// when it returns; a checkpoint restore is not, as a crash makes the next job restore again.
    /// </summary>
    public async Task<byte[]?> FetchAsync(IObjectStore store, string bucket, StoredObject item, string destination, Action<long> onBytes, CancellationToken cancellationToken, bool sha256 = false, bool durable = true)
    {
        var part = destination + ".part";
        var rangesFile = destination + ".ranges";
        try
        {
            // A caller that asks for the SHA-256 checks the bytes against a record of its own (a
            // checkpoint manifest); the MD5 against the ETag would check them a second time, and
            // MD5 runs at less than half the speed of SHA-256 here (openssl speed: 0.7 against 1.6 GB/s).
            var md5Wanted = !sha256 && IsPlainMd5(item.ETag);
            Digests digests;
            if (item.Size >= RangedThreshold)
            {
                digests = await FetchRangesAsync(store, bucket, item, part, rangesFile, md5Wanted, sha256, durable, onBytes, cancellationToken);
            }
            else
            {
                digests = await _retry.ExecuteAsync(async token => await FetchWholeAsync(store, bucket, item, part, md5Wanted, sha256, onBytes, _limit, token), cancellationToken);
            }
            var md5 = digests.Md5;

            var size = new FileInfo(part).Length;
            if (size != item.Size)
                throw new ObjectStoreException($"'{bucket}/{item.Key}' arrived with {size} bytes instead of {item.Size}.");
            if (md5 is not null && IsPlainMd5(item.ETag) && !Convert.ToHexStringLower(md5).Equals(item.ETag, StringComparison.OrdinalIgnoreCase))
            {
                File.Delete(part);
                File.Delete(rangesFile);
                throw new ObjectStoreException($"'{bucket}/{item.Key}' arrived corrupt: its MD5 {Convert.ToHexStringLower(md5)} is not its ETag {item.ETag}.");
            }

            // Read-only, as every job sees it; then into place in one rename.
            File.SetUnixFileMode(part, UnixFileMode.UserRead | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
            File.Move(part, destination, overwrite: true);
            if (item.Size >= RangedThreshold)
                File.Delete(rangesFile);
            return digests.Sha256;
        }
        catch (Exception error) when (error is ObjectStoreException or IOException && !cancellationToken.IsCancellationRequested)
        {
            throw new SystemFailureException($"could not fetch dataset object '{bucket}/{item.Key}': {error.Message}", error);
        }
    }

    private static bool IsPlainMd5(string etag) => etag.Length == 32 && etag.All(char.IsAsciiHexDigit);

    private static async Task<Digests> FetchWholeAsync(IObjectStore store, string bucket, StoredObject item, string part, bool wantMd5, bool sha256, Action<long> onBytes, BandwidthLimit? limit, CancellationToken cancellationToken)
    {
        using var md5 = wantMd5 ? IncrementalHash.CreateHash(HashAlgorithmName.MD5) : null;
        using var sha = sha256 ? IncrementalHash.CreateHash(HashAlgorithmName.SHA256) : null;
        // The whole object as an explicit range: without one, AWSSDK.S3 hashes the body with its
        // own managed MD5, a second and slower pass over what this method already hashes.
        // A fresh file rather than a truncated one: ext4 flushes a file truncated to zero when it
        // is closed (auto_da_alloc), a disk write per object for nothing. (Exists first: an unlink
        // locks the directory even when there is nothing to remove.)
        if (File.Exists(part))
            File.Delete(part);
        await using (var body = await store.OpenReadAsync(bucket, item.Key, 0, item.Size > 0 ? item.Size : null, cancellationToken))
        await using (var file = new FileStream(part, FileMode.CreateNew, FileAccess.Write, FileShare.None, bufferSize: 1, FileOptions.Asynchronous))
        {
            var buffer = new byte[Math.Min(Math.Max(item.Size, 1), 1L << 20)];
            long total = 0;
            int read;
            while ((read = await body.ReadAsync(buffer, cancellationToken)) > 0)
            {
                await file.WriteAsync(buffer.AsMemory(0, read), cancellationToken);
                md5?.AppendData(buffer, 0, read);
                sha?.AppendData(buffer, 0, read);
                total += read;
                onBytes(read);
                if (limit is not null)
                    await limit.WaitAsync(read, cancellationToken);
            }
            if (total != item.Size)
                throw new IOException($"'{bucket}/{item.Key}': the body ended after {total} of {item.Size} bytes.");
        }
        return new Digests(md5?.GetHashAndReset(), sha?.GetHashAndReset());
    }

    private async Task<Digests> FetchRangesAsync(IObjectStore store, string bucket, StoredObject item, string part, string rangesFile, bool md5, bool sha256, bool durable, Action<long> onBytes, CancellationToken cancellationToken)
    {
        // Ranges recorded as done survive only with the part file they were written into. Each
        // line is "START LENGTH", and only a line that matches a range of today's size counts: a
        // record written with another range size (an older gpu-executor) then costs a download,
        // never a range taken as done when only part of it was.
        var done = File.Exists(part) && File.Exists(rangesFile)
            ? File.ReadAllLines(rangesFile).Select(line => RecordedRangeStart(line, item.Size)).Where(start => start >= 0).ToHashSet()
            : [];
        if (done.Count == 0)
            File.Delete(rangesFile);

        using var handle = File.OpenHandle(part, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None, FileOptions.Asynchronous);
        if (RandomAccess.GetLength(handle) != item.Size)
            RandomAccess.SetLength(handle, item.Size);
        var pending = new List<long>();
        for (long start = 0; start < item.Size; start += RangeSize)
        {
            if (!done.Contains(start))
                pending.Add(start);
        }

        // MD5 is sequential, and a second pass over a large object once it is complete costs as
        // long as the download itself. So the hash follows the download: it reads each range back
        // from the page cache as soon as every range before it is complete, and the ranges are
        // started in order, so the hash trails the download by a few ranges.
        var ranges = new CompletedRanges(done);
        using var stopHashing = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var hashing = md5 || sha256
            ? Task.Run(() => HashInOrderAsync(handle, item.Size, ranges, md5, sha256, stopHashing.Token), CancellationToken.None)
            : Task.FromResult(new Digests(null, null));
        try
        {
            var record = new Lock();
            await Parallel.ForEachAsync(pending, new ParallelOptions { MaxDegreeOfParallelism = ParallelRanges, CancellationToken = cancellationToken }, async (start, token) =>
            {
                var length = Math.Min(RangeSize, item.Size - start);
                await _retry.ExecuteAsync(async attemptToken =>
                {
                    // Pooled: a fresh 1 MiB array per range is a large-object-heap allocation the
                    // runtime zeroes first, a few percent of the download's CPU.
                    var buffer = ArrayPool<byte>.Shared.Rent(ChunkSize);
                    try
                    {
                        long written = 0;
                        await using var body = await store.OpenReadAsync(bucket, item.Key, start, length, attemptToken);
                        int read;
                        while (written < length && (read = await body.ReadAsync(buffer.AsMemory(0, (int)Math.Min(ChunkSize, length - written)), attemptToken)) > 0)
                        {
                            await RandomAccess.WriteAsync(handle, buffer.AsMemory(0, read), start + written, attemptToken);
                            written += read;
                            onBytes(read);
                            if (_limit is not null)
                                await _limit.WaitAsync(read, attemptToken);
                        }
                        if (written != length)
                            throw new IOException($"'{bucket}/{item.Key}': range at {start} ended after {written} of {length} bytes.");
                    }
                    finally
                    {
                        ArrayPool<byte>.Shared.Return(buffer);
                    }
                }, token);
                // Start writing the range back now, so the flush at the end finds little left
                // to do (best effort: a failure here only makes that flush slower).
                if (durable)
                    Writeback.Start(handle, start, length);
                lock (record)
                    File.AppendAllText(rangesFile, string.Create(CultureInfo.InvariantCulture, $"{start} {length}\n"));
                ranges.Complete(start);
            });
        }
        catch
        {
            await stopHashing.CancelAsync();
            await hashing.ContinueWith(_ => { }, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
            throw;
        }
        var digests = await hashing;
        if (durable)
            RandomAccess.FlushToDisk(handle);
        return digests;
    }

    /// <summary>The start of the range a ".ranges" line records, or -1 unless it is one of this object's ranges at today's size.</summary>
    private static long RecordedRangeStart(string line, long size)
    {
        var fields = line.Split(' ');
        return fields.Length == 2
            && long.TryParse(fields[0], NumberStyles.None, CultureInfo.InvariantCulture, out var start)
            && long.TryParse(fields[1], NumberStyles.None, CultureInfo.InvariantCulture, out var length)
            && start % RangeSize == 0 && start < size && length == Math.Min(RangeSize, size - start)
            ? start
            : -1;
    }

    private static async Task<Digests> HashInOrderAsync(Microsoft.Win32.SafeHandles.SafeFileHandle handle, long size, CompletedRanges ranges, bool wantMd5, bool wantSha256, CancellationToken cancellationToken)
    {
        using var md5 = wantMd5 ? IncrementalHash.CreateHash(HashAlgorithmName.MD5) : null;
        using var sha = wantSha256 ? IncrementalHash.CreateHash(HashAlgorithmName.SHA256) : null;
        var buffer = new byte[ChunkSize];
        for (long start = 0; start < size; start += RangeSize)
        {
            await ranges.WaitForAsync(start, cancellationToken);
            var end = Math.Min(start + RangeSize, size);
            for (var offset = start; offset < end;)
            {
                var read = await RandomAccess.ReadAsync(handle, buffer.AsMemory(0, (int)Math.Min(buffer.Length, end - offset)), offset, cancellationToken);
                if (read == 0)
                    throw new IOException($"the part file ended at {offset} of {size} bytes while it was hashed");
                md5?.AppendData(buffer, 0, read);
                sha?.AppendData(buffer, 0, read);
                offset += read;
            }
        }
        return new Digests(md5?.GetHashAndReset(), sha?.GetHashAndReset());
    }

    /// <summary>The ranges of one object that are on disk, for the hash that waits on them.</summary>
    private sealed class CompletedRanges(HashSet<long> alreadyDone)
    {
        private readonly HashSet<long> _done = [.. alreadyDone];
        private readonly SemaphoreSlim _changed = new(0);
        private readonly Lock _lock = new();

        public void Complete(long start)
        {
            lock (_lock)
                _done.Add(start);
            _changed.Release();
        }

        public async Task WaitForAsync(long start, CancellationToken cancellationToken)
        {
            while (true)
            {
                lock (_lock)
                {
                    if (_done.Contains(start))
                        return;
                }
                await _changed.WaitAsync(cancellationToken);
            }
        }
    }
}
