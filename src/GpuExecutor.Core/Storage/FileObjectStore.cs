using System.Runtime.CompilerServices;
using System.Security.Cryptography;
using System.Text;
using GpuExecutor.Datasets;
using GpuExecutor.HostFiles;

namespace GpuExecutor.Storage;

/// <summary>
/// A directory as an object store: ROOT/BUCKET/KEY. Symbolic links are neither listed nor
/// followed, and every path is checked to stay under ROOT, so a key cannot reach other files.
/// </summary>
public sealed class FileObjectStore(string root) : IObjectStore
{
    public async IAsyncEnumerable<StoredObject> ListAsync(string bucket, string prefix, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var bucketDir = BucketDirectory(bucket);
        if (!Directory.Exists(bucketDir))
            yield break;
        // Walk only the directory part of the prefix; the rest filters by name.
        var directoryPart = prefix.Contains('/') ? prefix[..(prefix.LastIndexOf('/') + 1)] : "";
        var start = Inside(bucketDir, directoryPart);
        if (start is null || !Directory.Exists(start) || IsLink(start))
            yield break;

        var options = new EnumerationOptions { RecurseSubdirectories = true, AttributesToSkip = FileAttributes.ReparsePoint, IgnoreInaccessible = true };
        foreach (var path in Directory.EnumerateFiles(start, "*", options).Order(StringComparer.Ordinal))
        {
            cancellationToken.ThrowIfCancellationRequested();
            if (Path.GetFileName(path).Contains(TemporaryMarker, StringComparison.Ordinal))
                continue;
            var key = Path.GetRelativePath(bucketDir, path).Replace(Path.DirectorySeparatorChar, '/');
            if (!key.StartsWith(prefix, StringComparison.Ordinal))
                continue;
            var info = new FileInfo(path);
            yield return new StoredObject(key, info.Length, VersionTag(info));
            await Task.Yield();
        }
    }

    public Task<StoredObject?> HeadAsync(string bucket, string key, CancellationToken cancellationToken)
    {
        var path = ObjectPath(bucket, key);
        var info = new FileInfo(path);
        return Task.FromResult(info.Exists && !IsLink(path) ? new StoredObject(key, info.Length, VersionTag(info)) : null);
    }

    public Task<Stream> OpenReadAsync(string bucket, string key, long offset, long? length, CancellationToken cancellationToken)
    {
        var path = ObjectPath(bucket, key);
        if (IsLink(path))
            throw new ObjectStoreException($"'{bucket}/{key}' is a symbolic link, which a file store does not serve.");
        try
        {
            var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1, FileOptions.Asynchronous | FileOptions.SequentialScan);
            stream.Seek(offset, SeekOrigin.Begin);
            return Task.FromResult<Stream>(stream);
        }
        catch (Exception error) when (error is IOException or UnauthorizedAccessException)
        {
            throw new ObjectStoreException($"cannot read '{bucket}/{key}' from the file store: {error.Message}", error);
        }
    }

    public Microsoft.Win32.SafeHandles.SafeFileHandle? OpenLocalFile(string bucket, string key)
    {
        var path = ObjectPath(bucket, key);
        if (IsLink(path))
            return null;
        try
        {
            return File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read, FileOptions.SequentialScan);
        }
        catch (Exception error) when (error is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>Written under a name with this in it, then renamed: a put is whole or absent.</summary>
    private const string TemporaryMarker = ".gpu-executor-put-";

    public async Task PutFileAsync(string bucket, string key, string path, long length, CancellationToken cancellationToken, bool manyFilesInParallel = false)
    {
        await using var source = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, bufferSize: 1, FileOptions.Asynchronous | FileOptions.SequentialScan);
        await WriteWholeAsync(bucket, key, async target =>
        {
            var buffer = new byte[1 << 20];
            long copied = 0;
            while (copied < length)
            {
                var read = await source.ReadAsync(buffer.AsMemory(0, (int)Math.Min(buffer.Length, length - copied)), cancellationToken);
                if (read == 0)
                    throw new ObjectStoreException($"'{path}' ended after {copied} of {length} bytes while it was stored.");
                await target.WriteAsync(buffer.AsMemory(0, read), cancellationToken);
                copied += read;
            }
        });
    }

    /// <summary>
    /// Links the file in under a temporary name, flushes it, and renames it into place: the
    /// bytes are on disk once already, and copying them again was half of a local commit's time
    /// (the page cache's write throttling, measured with strace in the checkpoint benchmark).
    /// Where no link can be made (another filesystem, a link limit), the bytes are copied.
    /// </summary>
    public async Task PutImmutableFileAsync(string bucket, string key, string path, long length, CancellationToken cancellationToken, bool manyFilesInParallel = false)
    {
        var linked = await PlaceWholeAsync(bucket, key, temporary =>
        {
            if (new FileInfo(path).Length != length || HardLinks.Create(path, temporary) != 0)
                return Task.FromResult(false);
            using (var flush = new FileStream(temporary, FileMode.Open, FileAccess.Write, FileShare.ReadWrite, bufferSize: 1))
                flush.Flush(flushToDisk: true);
            return Task.FromResult(true);
        });
        if (!linked)
            await PutFileAsync(bucket, key, path, length, cancellationToken);
    }

    public Task PutBytesAsync(string bucket, string key, ReadOnlyMemory<byte> content, CancellationToken cancellationToken) =>
        WriteWholeAsync(bucket, key, target => target.WriteAsync(content, cancellationToken).AsTask());

    public Task DeleteAsync(string bucket, string key, CancellationToken cancellationToken)
    {
        var path = ObjectPath(bucket, key);
        try
        {
            File.Delete(path);
        }
        catch (Exception error) when (error is IOException or UnauthorizedAccessException)
        {
            throw new ObjectStoreException($"cannot delete '{bucket}/{key}' from the file store: {error.Message}", error);
        }
        return Task.CompletedTask;
    }

    /// <summary>Write beside the target, flush to disk, then rename over it: a crash leaves the old object or the new one.</summary>
    private async Task WriteWholeAsync(string bucket, string key, Func<FileStream, Task> write) =>
        await PlaceWholeAsync(bucket, key, async temporary =>
        {
            await using var target = new FileStream(temporary, FileMode.CreateNew, FileAccess.Write, FileShare.None, bufferSize: 1, FileOptions.Asynchronous);
            await write(target);
            target.Flush(flushToDisk: true);
            return true;
        });

    /// <summary>
    /// Places an object whole: <paramref name="create"/> makes a temporary file beside it and
    /// flushes it to disk (or answers false, and nothing is placed), then it is renamed over the
    /// object. Failures are the store's; the temporary file never stays behind.
    /// </summary>
    private async Task<bool> PlaceWholeAsync(string bucket, string key, Func<string, Task<bool>> create)
    {
        var path = ObjectPath(bucket, key);
        var temporary = TemporaryPath(path);
        try
        {
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            if (!await create(temporary))
                return false;
            File.Move(temporary, path, overwrite: true);
            return true;
        }
        catch (Exception error) when (error is IOException or UnauthorizedAccessException)
        {
            throw new ObjectStoreException($"cannot write '{bucket}/{key}' to the file store: {error.Message}", error, transient: error is IOException);
        }
        finally
        {
            if (File.Exists(temporary))
                File.Delete(temporary);
        }
    }

    private static string TemporaryPath(string objectPath) =>
        objectPath + TemporaryMarker + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(6));

    /// <summary>
    /// A file's version: its size and modification time, hashed, since files have no ETag. The
    /// "file-" prefix keeps it from passing for an MD5, which the fetcher would verify against.
    /// </summary>
    private static string VersionTag(FileInfo info) =>
        "file-" + Convert.ToHexStringLower(SHA256.HashData(Encoding.ASCII.GetBytes($"{info.Length}:{info.LastWriteTimeUtc.Ticks}")))[..32];

    private string BucketDirectory(string bucket) =>
        Inside(root, bucket) ?? throw new ObjectStoreException($"bucket '{bucket}' is not a plain directory name.");

    private string ObjectPath(string bucket, string key)
    {
        if (!ObjectKeyPaths.IsSafeKey(key, allowTrailingSlash: false) || key.Length == 0)
            throw new ObjectStoreException($"key '{key}' is not a safe path.");
        return Inside(BucketDirectory(bucket), key) ?? throw new ObjectStoreException($"key '{key}' leads outside its bucket.");
    }

    /// <summary>The full path of <paramref name="relative"/> under <paramref name="directory"/>, or null if it would leave it.</summary>
    private static string? Inside(string directory, string relative)
    {
        var full = Path.GetFullPath(Path.Combine(directory, relative));
        var baseDir = Path.GetFullPath(directory).TrimEnd('/') + "/";
        return full == baseDir.TrimEnd('/') || full.StartsWith(baseDir, StringComparison.Ordinal) || (full + "/") == baseDir ? full : null;
    }

    private static bool IsLink(string path) => new FileInfo(path).LinkTarget is not null;

    public void Dispose()
    {
    }
}
