using System.Security.Cryptography;
using GpuExecutor.Datasets;
using GpuExecutor.Storage;

namespace GpuExecutor.Tests;

/// <summary>
/// The ".ranges" record of a killed download, read back on the next fetch: only a range recorded
/// at today's range size counts as done, so a record an older gpu-executor wrote (another range
/// size, or bare start offsets) costs a download and never leaves a hole of zeros in the object.
/// </summary>
public sealed class ObjectFetcherTests
{
    private const long Size = 2 * ObjectFetcher.RangeSize + (1 << 20);

    [Fact]
    public async Task A_range_recorded_at_another_size_is_fetched_again()
    {
        var (store, item, expected, destination) = Seed();
        // Part file of zeros, and a record that claims its first two 16 MiB ranges, in the
        // format of an older gpu-executor and in today's format with the old length.
        await File.WriteAllBytesAsync(destination + ".part", new byte[Size], TestContext.Current.CancellationToken);
        await File.WriteAllTextAsync(destination + ".ranges", "0\n16777216\n0 16777216\n", TestContext.Current.CancellationToken);

        var sha256 = await new ObjectFetcher(_ => { }).FetchAsync(store, "bucket", item, destination, _ => { }, TestContext.Current.CancellationToken, sha256: true, durable: false);

        Assert.Equal(expected, sha256);
        Assert.Equal(expected, SHA256.HashData(await File.ReadAllBytesAsync(destination, TestContext.Current.CancellationToken)));
        Assert.Equal(3, store.RangeReads);
    }

    [Fact]
    public async Task A_range_recorded_at_todays_size_is_not_fetched_again()
    {
        var (store, item, expected, destination) = Seed();
        var part = new byte[Size];
        await using (var source = await store.OpenReadAsync("bucket", item.Key, 0, ObjectFetcher.RangeSize, TestContext.Current.CancellationToken))
            await source.ReadExactlyAsync(part.AsMemory(0, (int)ObjectFetcher.RangeSize), TestContext.Current.CancellationToken);
        store.RangeReads = 0;
        await File.WriteAllBytesAsync(destination + ".part", part, TestContext.Current.CancellationToken);
        await File.WriteAllTextAsync(destination + ".ranges", $"0 {ObjectFetcher.RangeSize}\n", TestContext.Current.CancellationToken);

        var sha256 = await new ObjectFetcher(_ => { }).FetchAsync(store, "bucket", item, destination, _ => { }, TestContext.Current.CancellationToken, sha256: true, durable: false);

        Assert.Equal(expected, sha256);
        Assert.Equal(2, store.RangeReads);
        Assert.False(File.Exists(destination + ".ranges"));
    }

    private static (CountingStore Store, StoredObject Item, byte[] Sha256, string Destination) Seed()
    {
        var root = Directory.CreateTempSubdirectory("fetcher-store").FullName;
        Directory.CreateDirectory(Path.Combine(root, "bucket"));
        var bytes = RandomNumberGenerator.GetBytes((int)Size);
        File.WriteAllBytes(Path.Combine(root, "bucket", "big.bin"), bytes);
        var store = new CountingStore(new FileObjectStore(root));
        var item = store.HeadAsync("bucket", "big.bin", CancellationToken.None).GetAwaiter().GetResult()!;
        var destination = Path.Combine(Directory.CreateTempSubdirectory("fetcher-cache").FullName, "object");
        return (store, item, SHA256.HashData(bytes), destination);
    }

    /// <summary>A real file store that counts the reads the fetcher makes of it.</summary>
    private sealed class CountingStore(IObjectStore inner) : IObjectStore
    {
        private int _rangeReads;

        // The fetcher reads ranges from several threads at once.
        public int RangeReads
        {
            get => Volatile.Read(ref _rangeReads);
            set => Volatile.Write(ref _rangeReads, value);
        }

        public IAsyncEnumerable<StoredObject> ListAsync(string bucket, string prefix, CancellationToken cancellationToken) => inner.ListAsync(bucket, prefix, cancellationToken);
        public Task<StoredObject?> HeadAsync(string bucket, string key, CancellationToken cancellationToken) => inner.HeadAsync(bucket, key, cancellationToken);

        public Task<Stream> OpenReadAsync(string bucket, string key, long offset, long? length, CancellationToken cancellationToken)
        {
            Interlocked.Increment(ref _rangeReads);
            return inner.OpenReadAsync(bucket, key, offset, length, cancellationToken);
        }

        public Task PutFileAsync(string bucket, string key, string path, long length, CancellationToken cancellationToken, bool manyFilesInParallel = false) => inner.PutFileAsync(bucket, key, path, length, cancellationToken, manyFilesInParallel);
        public Task PutBytesAsync(string bucket, string key, ReadOnlyMemory<byte> content, CancellationToken cancellationToken) => inner.PutBytesAsync(bucket, key, content, cancellationToken);
        public Task DeleteAsync(string bucket, string key, CancellationToken cancellationToken) => inner.DeleteAsync(bucket, key, cancellationToken);
        public void Dispose() => inner.Dispose();
    }
}
