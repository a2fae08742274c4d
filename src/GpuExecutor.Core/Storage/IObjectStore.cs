using GpuExecutor.Configuration;
using GpuExecutor.Outcomes;

namespace GpuExecutor.Storage;

/// <summary>One object's identity in a store: its key, size and version tag.</summary>
/// <param name="ETag">The store's version tag without quotes; for S3 single-part uploads, the MD5 of the bytes.</param>
public sealed record StoredObject(string Key, long Size, string ETag);

/// <summary>What datasets (and later checkpoints) need of an object store, in the project's own types.</summary>
public interface IObjectStore : IDisposable
{
    /// <summary>Every object whose key starts with <paramref name="prefix"/>, page by page.</summary>
    IAsyncEnumerable<StoredObject> ListAsync(string bucket, string prefix, CancellationToken cancellationToken);

    /// <summary>Null when there is no such object.</summary>
    Task<StoredObject?> HeadAsync(string bucket, string key, CancellationToken cancellationToken);

    /// <summary>The object's bytes from <paramref name="offset"/>, <paramref name="length"/> of them (null: to the end).</summary>
    Task<Stream> OpenReadAsync(string bucket, string key, long offset, long? length, CancellationToken cancellationToken);

    /// <summary>
    /// Stores <paramref name="length"/> bytes of the local file <paramref name="path"/> as the
    /// object, whole or not at all: a reader sees the old object or the new one, never a mix.
    /// <paramref name="manyFilesInParallel"/>: the caller uploads several files side by side,
    /// which already keeps several connections busy, so a store need not split this one.
    /// </summary>
    Task PutFileAsync(string bucket, string key, string path, long length, CancellationToken cancellationToken, bool manyFilesInParallel = false);

    /// <summary>
    /// <see cref="PutFileAsync"/> for a file that its caller will never change again (a
    /// checkpoint snapshot's private copy). A store on the same filesystem may then make the
    /// object a second name for the file's own bytes instead of writing them again.
    /// </summary>
    Task PutImmutableFileAsync(string bucket, string key, string path, long length, CancellationToken cancellationToken, bool manyFilesInParallel = false) =>
        PutFileAsync(bucket, key, path, length, cancellationToken, manyFilesInParallel);

    /// <summary>
    /// The object as a plain local file, opened for reading, where the store keeps it so (a
    /// file store); null otherwise, and for an object that is absent or a link. A reader can
    /// then copy it in one pass instead of streaming it.
    /// </summary>
    Microsoft.Win32.SafeHandles.SafeFileHandle? OpenLocalFile(string bucket, string key) => null;

    /// <summary>Stores a small object (a manifest, a pointer) whole.</summary>
    Task PutBytesAsync(string bucket, string key, ReadOnlyMemory<byte> content, CancellationToken cancellationToken);

    /// <summary>Removes the object; an object that is not there is not an error.</summary>
    Task DeleteAsync(string bucket, string key, CancellationToken cancellationToken);

    /// <summary>The store's own clock, for `doctor`; null for a store on this host, which has no other clock.</summary>
    Task<DateTimeOffset?> ServerTimeAsync(CancellationToken cancellationToken) => Task.FromResult<DateTimeOffset?>(null);
}

/// <summary>The store could not be reached or failed a request: infrastructure, so a system failure.</summary>
/// <param name="Transient">Worth retrying: a 5xx, a throttle, a reset, a timeout, a short body; not a 403 or 404.</param>
public sealed class ObjectStoreException(string message, Exception? inner = null, bool transient = false) : SystemFailureException(message, inner)
{
    public bool Transient { get; } = transient;
}
