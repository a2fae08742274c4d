using GpuExecutor.Configuration;
using GpuExecutor.Datasets;
using GpuExecutor.Outcomes;
using GpuExecutor.Storage;
using GpuExecutor.Tests.Fakes;

namespace GpuExecutor.Tests;

public sealed class DatasetDeclarationTests
{
    private static readonly ExecutorConfig Config = ConfigLoader.Parse("""
        [stores.s3]
        type = "s3"
        endpoint = "http://127.0.0.1:4568"
        path_style = true
        access_key_id = "S3RVER"
        secret_access_key = "very-secret"
        allow = ["imagenet", "team-a/datasets/"]

        [stores.local]
        type = "file"
        root = "/srv/datasets"
        allow = ["common"]
        """, "test.toml");

    [Fact]
    public void Lines_become_sources_and_container_paths()
    {
        var mounts = DatasetDeclaration.Parse("""
            # training data
            s3://imagenet/train/ -> /data/imagenet/train

            s3://team-a/datasets/tokens.bin -> /data/tokens etag=0123456789abcdef0123456789abcdef
            local://common -> /data/common/
            """, Config);

        Assert.Equal(
            [
                new DatasetMount(new DatasetSource("s3", "imagenet", "train/"), "/data/imagenet/train", null, 2),
                new DatasetMount(new DatasetSource("s3", "team-a", "datasets/tokens.bin"), "/data/tokens", "0123456789abcdef0123456789abcdef", 4),
                new DatasetMount(new DatasetSource("local", "common", ""), "/data/common", null, 5),
            ],
            mounts);
        Assert.False(mounts[1].Source.IsPrefix);
        Assert.All(mounts, mount => Assert.Equal(DatasetMode.Prefetch, mount.Mode));
    }

    [Fact]
    public void Mode_stream_streams_a_line_and_mode_prefetch_is_the_default_said_aloud()
    {
        var mounts = DatasetDeclaration.Parse("""
            s3://imagenet/train/ -> /data/train mode=stream
            s3://team-a/datasets/tokens.bin -> /data/tokens mode=prefetch etag=0123456789abcdef0123456789abcdef
            """, Config);

        Assert.Equal([DatasetMode.Stream, DatasetMode.Prefetch], mounts.Select(mount => mount.Mode));
        Assert.Equal("0123456789abcdef0123456789abcdef", mounts[1].EtagPin);
        Assert.Equal("lists/train.txt", DatasetDeclaration.Parse("s3://imagenet/train/ -> /data order=lists/train.txt mode=stream", Config).Single().OrderFile);
    }

    [Fact]
    public void A_key_named_like_a_streamed_views_index_is_left_out_of_every_view()
    {
        var (paths, quarantined) = DatasetLayout.Plan(new DatasetSource("s3", "imagenet", "train/"), ["train/a.tar", "train/" + DatasetStreams.IndexFileName, "train/sub/" + DatasetStreams.IndexFileName]);

        Assert.Equal(["a.tar", "sub/" + DatasetStreams.IndexFileName], paths.Values.Order(StringComparer.Ordinal));
        Assert.Equal("train/" + DatasetStreams.IndexFileName, Assert.Single(quarantined).Key);
    }

    [Theory]
    [InlineData("s3://imagenet/train/", "line 1: is not \"SOURCE -> CONTAINER_PATH\"")]
    [InlineData("s3://imagenet/ -> /a -> /b", "line 1: is not \"SOURCE -> CONTAINER_PATH\"")]
    [InlineData("imagenet/train/ -> /data", "is not STORE://BUCKET/KEY")]
    [InlineData("gcs://imagenet/ -> /data", "store 'gcs' is not configured on this runner (configured stores: local, s3)")]
    [InlineData("s3://private/ -> /data", "'s3://private/' is not allowed: it is outside every rule of stores.s3.allow [\"imagenet\", \"team-a/datasets/\"]")]
    [InlineData("s3://team-a/ -> /data", "is not allowed")]
    [InlineData("s3://team-a/datasets-private/x -> /data", "is not allowed")]
    [InlineData("s3://imagenet/../team-b/ -> /data", "has an empty, '.' or '..' segment")]
    [InlineData("local://common/../../etc/ -> /data", "has an empty, '.' or '..' segment")]
    [InlineData("s3://imagenet//x -> /data", "has an empty, '.' or '..' segment")]
    [InlineData("s3://imagenet/ -> data", "container path 'data' must be absolute")]
    [InlineData("s3://imagenet/ -> /", "must be a directory below '/'")]
    [InlineData("s3://imagenet/ -> /data/../etc", "without '.' or '..'")]
    [InlineData("s3://imagenet/ -> /builds/ml", "overlaps the builds directory (/builds)")]
    [InlineData("s3://imagenet/ -> /cache", "overlaps the cache directory (/cache)")]
    [InlineData("s3://imagenet/ -> /etc/ssl", "overlaps a system directory (/etc)")]
    [InlineData("s3://imagenet/ -> /data\ns3://team-a/datasets/ -> /data/more", "line 2: container path '/data/more' overlaps the dataset of line 1 (/data)")]
    [InlineData("s3://imagenet/train/ -> /data etag=abc", "an etag pin names one object's version")]
    [InlineData("s3://imagenet/a.bin -> /data version=3", "'version=3' is not an option; use etag=ETAG, mode=stream or order=PATH")]
    [InlineData("s3://imagenet/train/ -> /data mode=lazy", "'mode=lazy' is not an option")]
    [InlineData("s3://imagenet/train/ -> /data mode=stream mode=prefetch", "'mode=prefetch' is not an option; use etag=ETAG, mode=stream or order=PATH (each at most once)")]
    [InlineData("s3://imagenet/train/ -> /data mode=stream x y z", "must name one container path, optionally followed by etag=ETAG, mode=stream or mode=prefetch, and order=PATH")]
    [InlineData("s3://imagenet/train/ -> /data order=shards.txt", "order=PATH names the order in which a streamed prefix arrives; it needs mode=stream")]
    [InlineData("s3://imagenet/train/ -> /data mode=stream order=../../etc/passwd", "order file '../../etc/passwd' is not a path inside the dataset")]
    public void A_bad_line_is_a_build_failure_that_says_why(string text, string expected)
    {
        var error = Assert.Throws<BuildFailureException>(() => DatasetDeclaration.Parse(text, Config));

        Assert.StartsWith("DATASETS ", error.Message);
        Assert.Contains(expected, error.Message);
    }

    [Fact]
    public void Store_secrets_never_show_in_text()
    {
        var store = Config.Stores["s3"];

        Assert.Equal("very-secret", store.SecretAccessKey!.Value);
        Assert.DoesNotContain("very-secret", store.ToString());
        Assert.DoesNotContain("very-secret", Config.ToString());
    }

    [Theory]
    [InlineData("[stores.S3]\ntype = \"s3\"", "stores.S3")]
    [InlineData("[stores.s3]\nallow = [\"x1\"]", "stores.s3.type")]
    [InlineData("[stores.s3]\ntype = \"gcs\"", "stores.s3.type")]
    [InlineData("[stores.s3]\ntype = \"s3\"\nallow = [\"Bad_Bucket\"]", "stores.s3.allow[0]")]
    [InlineData("[stores.s3]\ntype = \"s3\"\nallow = [\"b1/../x\"]", "stores.s3.allow[0]")]
    [InlineData("[stores.s3]\ntype = \"s3\"\nendpoint = \"ftp://x\"", "stores.s3.endpoint")]
    [InlineData("[stores.s3]\ntype = \"s3\"\naccess_key_id = \"x\"", "stores.s3.secret_access_key")]
    [InlineData("[stores.s3]\ntype = \"s3\"\nroot = \"/x\"", "stores.s3.root")]
    [InlineData("[stores.files]\ntype = \"file\"", "stores.files.root")]
    [InlineData("[stores.files]\ntype = \"file\"\nroot = \"/x\"\nendpoint = \"http://x\"", "stores.files.endpoint")]
    public void Bad_store_settings_name_their_key(string toml, string key)
    {
        var error = Assert.Throws<ConfigurationException>(() => ConfigLoader.Parse(toml, "bad.toml"));

        Assert.Equal(key, error.Key);
    }
}

public sealed class ObjectKeyPathTests
{
    [Fact]
    public void Keys_under_a_prefix_keep_their_relative_paths()
    {
        var (paths, quarantined) = DatasetLayout.Plan(new DatasetSource("s3", "b", "train/"), ["train/a.jpg", "train/class1/b.jpg", "train/"]);

        Assert.Equal(new Dictionary<string, string> { ["train/a.jpg"] = "a.jpg", ["train/class1/b.jpg"] = "class1/b.jpg" }, paths);
        Assert.Empty(quarantined);
    }

    [Fact]
    public void A_single_object_is_placed_under_its_own_name()
    {
        var (paths, _) = DatasetLayout.Plan(new DatasetSource("s3", "b", "tokens/shard-0.bin"), ["tokens/shard-0.bin"]);

        Assert.Equal("shard-0.bin", paths["tokens/shard-0.bin"]);
    }

    [Theory]
    [InlineData("d/../../etc/passwd")]
    [InlineData("d/./x")]
    [InlineData("d//x")]
    [InlineData("d/x\0y")]
    [InlineData("d/x\ny")]
    [InlineData("elsewhere/x")]
    public void Unsafe_keys_are_quarantined_never_placed(string key)
    {
        var (paths, quarantined) = DatasetLayout.Plan(new DatasetSource("s3", "b", "d/"), ["d/ok", key]);

        Assert.Equal(["d/ok"], paths.Keys);
        Assert.Equal(key, Assert.Single(quarantined).Key);
    }

    [Fact]
    public void A_leading_slash_key_is_quarantined_for_a_whole_bucket()
    {
        var (paths, quarantined) = DatasetLayout.Plan(new DatasetSource("s3", "b", ""), ["/etc/passwd", "ok.txt"]);

        Assert.Equal(["ok.txt"], paths.Keys);
        Assert.Equal("/etc/passwd", Assert.Single(quarantined).Key);
    }

    [Fact]
    public void A_file_that_collides_with_a_directory_gives_way()
    {
        var (paths, quarantined) = DatasetLayout.Plan(new DatasetSource("s3", "b", ""), ["a", "a/b", "a/c/d", "a/c"]);

        Assert.Equal(["a/b", "a/c/d"], paths.Keys.Order());
        Assert.Equal(["a", "a/c"], quarantined.Select(item => item.Key).Order());
        Assert.All(quarantined, item => Assert.Contains("is also a directory", item.Reason));
    }
}

public sealed class DatasetCacheEvictionTests : IDisposable
{
    private readonly string _stateDir = Directory.CreateTempSubdirectory("eviction").FullName;

    private string AddObject(string name, int bytes, DateTime lastUse)
    {
        var path = Path.Combine(_stateDir, "datasets", "objects", name);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllBytes(path, new byte[bytes]);
        File.SetLastAccessTimeUtc(path, lastUse);
        return path;
    }

    [Fact]
    public void Least_recently_used_objects_go_first_and_objects_of_live_views_stay()
    {
        var now = new DateTime(2026, 11, 28, 12, 0, 0, DateTimeKind.Utc);
        var cache = new DatasetCache(_stateDir, _ => { });
        var oldInUse = AddObject("a-old-in-use", 1000, now.AddDays(-3));
        var old = AddObject("b-old", 1000, now.AddDays(-2));
        var middle = AddObject("c-middle", 1000, now.AddDays(-1));
        var fresh = AddObject("d-fresh", 1000, now.AddMinutes(-1));
        AddObject("e-downloading.part", 5000, now.AddDays(-5));
        Directory.CreateDirectory(cache.ViewsOf(42));
        File.WriteAllLines(Path.Combine(cache.ViewsOf(42), "objects-in-use.txt"), ["a-old-in-use"]);

        var removed = cache.Evict(maxBytes: 2000, now);

        Assert.Equal(2000, removed);
        Assert.True(File.Exists(oldInUse));
        Assert.False(File.Exists(old));
        Assert.False(File.Exists(middle));
        Assert.True(File.Exists(fresh));
        Assert.True(File.Exists(Path.Combine(_stateDir, "datasets", "objects", "e-downloading.part")));
    }

    [Fact]
    public void Objects_used_in_the_quiet_period_stay_even_over_the_cap()
    {
        var now = DateTime.UtcNow;
        var cache = new DatasetCache(_stateDir, _ => { });
        var recent = AddObject("recent", 1000, now.AddMinutes(-2));

        Assert.Equal(0, cache.Evict(maxBytes: 0, now));
        Assert.True(File.Exists(recent));
    }

    /// <summary>A file store holding corpus/shards/a.tar, b.tar and c.tar of 100 bytes each, plus <paramref name="orderFile"/> as order.txt if given.</summary>
    private async Task<Dictionary<string, StoreSettings>> ShardStoreAsync(string? orderFile = null)
    {
        var storeRoot = Directory.CreateDirectory(Path.Combine(_stateDir, "store")).FullName;
        Directory.CreateDirectory(Path.Combine(storeRoot, "corpus", "shards"));
        foreach (var name in new[] { "a.tar", "b.tar", "c.tar" })
            await File.WriteAllBytesAsync(Path.Combine(storeRoot, "corpus", "shards", name), new byte[100], TestContext.Current.CancellationToken);
        if (orderFile is not null)
            await File.WriteAllTextAsync(Path.Combine(storeRoot, "corpus", "shards", "order.txt"), orderFile, TestContext.Current.CancellationToken);
        return new Dictionary<string, StoreSettings> { ["local"] = new() { Name = "local", Kind = StoreKind.File, Root = storeRoot, Allow = ["corpus"] } };
    }

    [Fact]
    public async Task A_streamed_view_starts_with_its_first_objects_and_counts_every_listed_object_as_in_use()
    {
        var stores = await ShardStoreAsync();
        var dataset = new DatasetMount(new DatasetSource("local", "corpus", "shards/"), "/data/corpus", null, 1) { Mode = DatasetMode.Stream };
        var cache = new DatasetCache(_stateDir, _ => { });

        var (mounts, summary) = await cache.MaterializeAsync(43, [dataset], stores, new LocalStores(), new ObjectFetcher(_ => { }), TestContext.Current.CancellationToken,
            new DatasetSettings { StreamFirstObjects = 1 });

        var view = mounts.Single().HostPath;
        Assert.Equal([DatasetStreams.IndexFileName, "a.tar"], Directory.GetFiles(view).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        Assert.Equal((2, 200L), (summary.StreamPending, summary.StreamPendingBytes));
        var index = DatasetStreams.ReadIndex(view)!;
        Assert.False(index.Complete);
        Assert.Equal([("a.tar", true), ("b.tar", false), ("c.tar", false)], index.Objects.Select(entry => (entry.Path, entry.Ready)));
        Assert.Equal(["b.tar", "c.tar"], DatasetStreams.ReadPlan(cache.ViewsOf(43))!.Pending.Select(item => item.Path));
        // Not yet fetched, already in use: an eviction now must not take what the stream is about to link.
        Assert.Equal(3, File.ReadAllLines(Path.Combine(cache.ViewsOf(43), "objects-in-use.txt")).Length);
    }

    [Fact]
    public async Task A_streamed_view_with_an_order_file_streams_in_that_order_and_says_which_names_it_skipped()
    {
        var stores = await ShardStoreAsync(orderFile: "# epoch 1\nc.tar\nmissing.tar\n\nb.tar\nc.tar\n");
        var dataset = new DatasetMount(new DatasetSource("local", "corpus", "shards/"), "/data/corpus", null, 1) { Mode = DatasetMode.Stream, OrderFile = "order.txt" };
        var log = new List<string>();
        var cache = new DatasetCache(_stateDir, log.Add);

        var (mounts, _) = await cache.MaterializeAsync(44, [dataset], stores, new LocalStores(), new ObjectFetcher(_ => { }), TestContext.Current.CancellationToken,
            new DatasetSettings { StreamFirstObjects = 2 });

        // The order file and the first name it lists come first; then the rest of its names; then what it left out.
        Assert.Equal([DatasetStreams.IndexFileName, "c.tar", "order.txt"], Directory.GetFiles(mounts.Single().HostPath).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        Assert.Equal(["b.tar", "a.tar"], DatasetStreams.ReadPlan(cache.ViewsOf(44))!.Pending.Select(item => item.Path));
        Assert.Contains(log, line => line.Contains("1 names in the order file 'order.txt' are not objects of the dataset", StringComparison.Ordinal));
    }

    public void Dispose() => Directory.Delete(_stateDir, recursive: true);
}

public sealed class BandwidthLimitTests
{
    [Fact]
    public void Each_chunk_waits_for_its_share_of_the_rate_and_idle_time_buys_at_most_a_seconds_burst()
    {
        var now = TimeSpan.FromHours(5);
        var limit = new BandwidthLimit(1_000_000, () => now);

        // A fresh limit has a second's burst in hand: the first MB goes at once, the next waits a second.
        Assert.Equal(TimeSpan.Zero, limit.Reserve(1_000_000));
        Assert.Equal(TimeSpan.FromSeconds(1), limit.Reserve(1_000_000));
        // Two fetches sharing it queue behind each other.
        Assert.Equal(TimeSpan.FromSeconds(1.5), limit.Reserve(500_000));

        // An hour idle saves up no more than one second.
        now += TimeSpan.FromHours(1);
        Assert.Equal(TimeSpan.Zero, limit.Reserve(1_000_000));
        Assert.Equal(TimeSpan.FromSeconds(0.5), limit.Reserve(500_000));
    }
}
