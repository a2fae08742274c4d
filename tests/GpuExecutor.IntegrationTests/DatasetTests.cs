using System.Security.Cryptography;
using GpuExecutor.Storage;

namespace GpuExecutor.IntegrationTests;

/// <summary>Datasets through the published binary, from the test bed's real s3rver, into real containers.</summary>
public sealed class DatasetTests
{
    private static string Md5(byte[] content) => Convert.ToHexStringLower(MD5.HashData(content));

    [Fact]
    public async Task A_large_object_and_two_thousand_small_ones_appear_read_only_with_identical_bytes_and_a_second_job_fetches_nothing()
    {
        using var s3 = S3Testbed.Client();
        var bucket = "corpus-" + Guid.NewGuid().ToString("N")[..8];
        await S3Testbed.CreateBucketAsync(s3, bucket);
        var expected = new Dictionary<string, string>();
        var large = RandomNumberGenerator.GetBytes(200 << 20);
        await S3Testbed.PutAsync(s3, bucket, "train/large.bin", large);
        expected["large.bin"] = Md5(large);
        await Parallel.ForEachAsync(Enumerable.Range(0, 2000), new ParallelOptions { MaxDegreeOfParallelism = 16 }, async (index, _) =>
        {
            var content = RandomNumberGenerator.GetBytes(512 + index);
            var name = $"shards/{index % 20:D2}/sample-{index:D4}.bin";
            await S3Testbed.PutAsync(s3, bucket, "train/" + name, content);
            lock (expected)
                expected[name] = Md5(content);
        });

        using var proxy = new CountingProxy(S3Testbed.Endpoint);
        using var workspace = new ExecutorWorkspace(extraConfig: S3Testbed.StoreConfig("s3", proxy.Endpoint, $"\"{bucket}\""));
        object Job(long jobId) => new
        {
            job_id = jobId,
            image = Testbed.TestImage,
            variables = new Dictionary<string, string> { ["DATASETS"] = $"s3://{bucket}/train/ -> /data/train" },
            script = new[]
            {
                // Hashes computed inside the container, from the read-only mount.
                "cd /data/train && find . -type f | sed 's|^./||' | sort | while read -r f; do echo \"$(md5sum \"$f\" | cut -d' ' -f1) $f\"; done > \"$CI_PROJECT_DIR/sums.txt\"",
                "touch /data/train/new 2>/dev/null && echo WRITABLE > \"$CI_PROJECT_DIR/writable.txt\" || true",
                "echo \"${AWS_SECRET_ACCESS_KEY:-absent}\" > \"$CI_PROJECT_DIR/secret.txt\"",
            },
        };

        var first = await workspace.SimulateAsync(Job(7801), "--prepare-retry-delay", "0.2");
        var gotsAfterFirst = proxy.ObjectGets;
        var second = await workspace.SimulateAsync(Job(7802));

        Assert.True(first.Result.Outcome == "success", first.Log);
        Assert.True(second.Result.Outcome == "success", second.Log);
        foreach (var jobId in new long[] { 7801, 7802 })
        {
            var sums = File.ReadAllLines(Path.Combine(workspace.ProjectDirOnHost(jobId), "sums.txt"))
                .Select(line => line.Split(' ', 2))
                .ToDictionary(parts => parts[1], parts => parts[0]);
            Assert.Equal(expected.Count, sums.Count);
            Assert.All(expected, pair => Assert.Equal(pair.Value, sums[pair.Key]));
            Assert.False(File.Exists(Path.Combine(workspace.ProjectDirOnHost(jobId), "writable.txt")), "the dataset mount is writable");
            Assert.Equal("absent", File.ReadAllText(Path.Combine(workspace.ProjectDirOnHost(jobId), "secret.txt")).Trim());
        }
        Assert.True(gotsAfterFirst >= 2001, $"the first job fetched only {gotsAfterFirst} objects");
        // The warm cache: the second job lists the prefix but reads no object from the store.
        Assert.Equal(gotsAfterFirst, proxy.ObjectGets);
        Assert.Contains("2001 objects from the host cache", second.Log);
        Assert.DoesNotContain("not-checked-by-s3rver", first.Log + second.Log);
    }

    [Fact]
    public async Task A_disallowed_bucket_is_a_build_failure_naming_the_rule()
    {
        using var workspace = new ExecutorWorkspace(extraConfig: S3Testbed.StoreConfig("s3", S3Testbed.Endpoint, "\"public-data\""));

        var run = await workspace.SimulateAsync(new
        {
            image = Testbed.TestImage,
            variables = new Dictionary<string, string> { ["DATASETS"] = "s3://secret-data/ -> /data" },
            script = new[] { "true" },
        });

        Assert.Equal("failed", run.Result.Outcome);
        Assert.Equal(1, run.Result.PrepareAttempts);
        Assert.Contains("'s3://secret-data/' is not allowed: it is outside every rule of stores.s3.allow [\"public-data\"]", run.Log);
    }

    [Fact]
    public async Task A_store_passes_its_credentials_to_jobs_only_when_the_config_says_so()
    {
        using var s3 = S3Testbed.Client();
        var bucket = "small-" + Guid.NewGuid().ToString("N")[..8];
        await S3Testbed.CreateBucketAsync(s3, bucket);
        await S3Testbed.PutAsync(s3, bucket, "labels.csv", "a,b\n"u8.ToArray());
        using var workspace = new ExecutorWorkspace(extraConfig: S3Testbed.StoreConfig("s3", S3Testbed.Endpoint, $"\"{bucket}\"") + "\npass_credentials_to_job = true\n");

        var run = await workspace.SimulateAsync(new
        {
            job_id = 7803L,
            image = Testbed.TestImage,
            variables = new Dictionary<string, string> { ["DATASETS"] = $"s3://{bucket}/labels.csv -> /data/labels" },
            script = new[] { "cat /data/labels/labels.csv > got.csv", "echo \"$AWS_ACCESS_KEY_ID $AWS_ENDPOINT_URL\" > credentials.txt" },
        });

        Assert.Equal("success", run.Result.Outcome);
        Assert.Equal("a,b\n", File.ReadAllText(Path.Combine(workspace.ProjectDirOnHost(7803), "got.csv")));
        Assert.Equal($"S3RVER {S3Testbed.Endpoint}", File.ReadAllText(Path.Combine(workspace.ProjectDirOnHost(7803), "credentials.txt")).Trim());
        Assert.DoesNotContain("not-checked-by-s3rver", run.Log);
    }

    private static async Task<(string Bucket, Dictionary<string, string> Sums, long Bytes)> SeedAsync(int smallObjects, int largeMiB)
    {
        using var s3 = S3Testbed.Client();
        var bucket = "seed-" + Guid.NewGuid().ToString("N")[..8];
        await S3Testbed.CreateBucketAsync(s3, bucket);
        var sums = new Dictionary<string, string>();
        long bytes = 0;
        if (largeMiB > 0)
        {
            var large = RandomNumberGenerator.GetBytes(largeMiB << 20);
            await S3Testbed.PutAsync(s3, bucket, "d/large.bin", large);
            sums["large.bin"] = Md5(large);
            bytes += large.Length;
        }
        for (var index = 0; index < smallObjects; index++)
        {
            var content = RandomNumberGenerator.GetBytes(4096 + index);
            await S3Testbed.PutAsync(s3, bucket, $"d/small-{index:D3}.bin", content);
            sums[$"small-{index:D3}.bin"] = Md5(content);
            bytes += content.Length;
        }
        return (bucket, sums, bytes);
    }

    private static object HashingJob(long jobId, string bucket) => new
    {
        job_id = jobId,
        image = Testbed.TestImage,
        variables = new Dictionary<string, string> { ["DATASETS"] = $"s3://{bucket}/d/ -> /data" },
        script = new[] { "cd /data && for f in *; do echo \"$(md5sum \"$f\" | cut -d' ' -f1) $f\"; done > \"$CI_PROJECT_DIR/sums.txt\"" },
    };

    private static Dictionary<string, string> SumsOf(ExecutorWorkspace workspace, long jobId) =>
        File.ReadAllLines(Path.Combine(workspace.ProjectDirOnHost(jobId), "sums.txt"))
            .Select(line => line.Split(' ', 2))
            .ToDictionary(parts => parts[1], parts => parts[0]);

    [Fact]
    public async Task Two_concurrent_jobs_with_the_same_dataset_fetch_each_object_once()
    {
        var (bucket, sums, _) = await SeedAsync(smallObjects: 40, largeMiB: 70);
        using var proxy = new CountingProxy(S3Testbed.Endpoint);
        using var workspace = new ExecutorWorkspace(extraConfig: S3Testbed.StoreConfig("s3", proxy.Endpoint, $"\"{bucket}\""));

        var runs = await Task.WhenAll(workspace.SimulateAsync(HashingJob(7811, bucket)), workspace.SimulateAsync(HashingJob(7812, bucket)));

        Assert.All(runs, run => Assert.Equal("success", run.Result.Outcome));
        Assert.Equal(sums, SumsOf(workspace, 7811));
        Assert.Equal(sums, SumsOf(workspace, 7812));
        // 40 small objects, and the 70 MiB one in its ranges: each requested once in all.
        var ranges = (int)Math.Ceiling((70L << 20) / (double)GpuExecutor.Datasets.ObjectFetcher.RangeSize);
        Assert.Equal(40 + ranges, proxy.ObjectGets);
    }

    [Fact]
    public async Task Injected_503s_resets_slow_and_truncated_responses_still_deliver_intact_data()
    {
        var (bucket, sums, _) = await SeedAsync(smallObjects: 30, largeMiB: 70);
        // Every third object GET goes wrong, in turn each way.
        InjectedFault[] faults = [InjectedFault.ServiceUnavailable, InjectedFault.ConnectionReset, InjectedFault.TruncatedBody, InjectedFault.SlowResponse];
        using var proxy = new CountingProxy(S3Testbed.Endpoint, number => number % 3 == 0 ? faults[number / 3 % faults.Length] : InjectedFault.None);
        using var workspace = new ExecutorWorkspace(extraConfig: S3Testbed.StoreConfig("s3", proxy.Endpoint, $"\"{bucket}\""));

        var run = await workspace.SimulateAsync(HashingJob(7821, bucket));

        Assert.Equal("success", run.Result.Outcome);
        Assert.True(proxy.FaultsInjected >= 10, $"only {proxy.FaultsInjected} faults were injected");
        Assert.Equal(sums, SumsOf(workspace, 7821));
        Assert.Contains("retrying after", run.Log);
    }

    [Fact]
    public async Task A_store_that_keeps_failing_is_a_system_failure_naming_the_object_and_nothing_corrupt_is_kept()
    {
        var (bucket, _, _) = await SeedAsync(smallObjects: 1, largeMiB: 0);
        using var proxy = new CountingProxy(S3Testbed.Endpoint, _ => InjectedFault.TruncatedBody);
        using var workspace = new ExecutorWorkspace(extraConfig: S3Testbed.StoreConfig("s3", proxy.Endpoint, $"\"{bucket}\""));

        var run = await workspace.SimulateAsync(HashingJob(7831, bucket));

        Assert.Equal("system_failure", run.Result.Outcome);
        Assert.Contains($"could not fetch dataset object '{bucket}/d/small-000.bin'", run.Log);
        var objects = Path.Combine(workspace.Root, "state", "datasets", "objects");
        Assert.Empty(Directory.Exists(objects) ? Directory.GetFiles(objects).Where(file => !file.EndsWith(".part", StringComparison.Ordinal)) : []);
    }

    [Fact]
    public async Task A_download_killed_midway_resumes_from_its_completed_ranges()
    {
        var (bucket, sums, _) = await SeedAsync(smallObjects: 0, largeMiB: 128);
        const long rangeBytes = GpuExecutor.Datasets.ObjectFetcher.RangeSize;
        Assert.Equal(4, (128L << 20) / rangeBytes);
        // The first two of the four ranges arrive; the others hang until the kill.
        using var firstProxy = new CountingProxy(S3Testbed.Endpoint, number => number <= 2 ? InjectedFault.None : InjectedFault.Hang);
        using var secondProxy = new CountingProxy(S3Testbed.Endpoint);
        using var workspace = new ExecutorWorkspace(extraConfig: S3Testbed.StoreConfig("s3", firstProxy.Endpoint, $"\"{bucket}\""));
        const long jobId = 7841;
        var environment = workspace.RunnerEnvironment(workspace.WritePayload(jobId, new Dictionary<string, string> { ["DATASETS"] = $"s3://{bucket}/d/ -> /data" }));

        var start = new System.Diagnostics.ProcessStartInfo(Testbed.Binary, ["--config", workspace.ConfigPath, "prepare"]) { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var (key, value) in environment)
            start.Environment[key] = value;
        using (var killed = System.Diagnostics.Process.Start(start)!)
        {
            var objects = Path.Combine(workspace.Root, "state", "datasets", "objects");
            var deadline = DateTime.UtcNow.AddSeconds(60);
            while (DateTime.UtcNow < deadline && RangesDone(objects) < 2)
                await Task.Delay(100, TestContext.Current.CancellationToken);
            Assert.Equal(2, RangesDone(objects));
            killed.Kill(entireProcessTree: true); // SIGKILL: no chance to tidy up
            await killed.WaitForExitAsync(TestContext.Current.CancellationToken);
        }

        File.WriteAllText(workspace.ConfigPath, File.ReadAllText(workspace.ConfigPath).Replace(firstProxy.Endpoint, secondProxy.Endpoint));
        try
        {
            var resumed = await workspace.CallVerbAsync(environment, "prepare");

            Assert.Equal(0, resumed.ExitCode);
            Assert.Equal(2, secondProxy.ObjectGets);
            Assert.Equal(2 * rangeBytes, secondProxy.ObjectBytesServed);
            // Cached objects are bare SHA-256 names; ".key" records which object each one is.
            var cached = Directory.GetFiles(Path.Combine(workspace.Root, "state", "datasets", "objects")).Single(file => Path.GetExtension(file).Length == 0);
            Assert.Equal(sums["large.bin"], Md5(File.ReadAllBytes(cached)));
        }
        finally
        {
            await workspace.CallVerbAsync(environment, "cleanup");
        }
    }

    private static int RangesDone(string objects) =>
        Directory.Exists(objects) ? Directory.GetFiles(objects, "*.ranges").Sum(file => File.ReadAllLines(file).Length) : 0;
}

public sealed class DatasetAdminTests
{
    [Fact]
    public async Task Prefetch_fills_the_cache_ahead_of_a_job_and_list_shows_what_is_there()
    {
        var storeRoot = Directory.CreateTempSubdirectory("file-store").FullName;
        Directory.CreateDirectory(Path.Combine(storeRoot, "corpus", "text"));
        for (var index = 0; index < 3; index++)
            File.WriteAllText(Path.Combine(storeRoot, "corpus", "text", $"part-{index}.txt"), new string('x', 1000 * (index + 1)));
        using var workspace = new ExecutorWorkspace(extraConfig: $"\n[stores.local]\ntype = \"file\"\nroot = \"{storeRoot}\"\nallow = [\"corpus\"]\n");
        try
        {
            var noEnvironment = new Dictionary<string, string?>();
            var prefetch = await workspace.CallVerbAsync(noEnvironment, "datasets", "prefetch", "local://corpus/text/");
            var refused = await workspace.CallVerbAsync(noEnvironment, "datasets", "prefetch", "local://other/");
            var listing = await workspace.CallVerbAsync(noEnvironment, "datasets", "list");
            var run = await workspace.SimulateAsync(new
            {
                image = Testbed.TestImage,
                variables = new Dictionary<string, string> { ["DATASETS"] = "local://corpus/text/ -> /data" },
                script = new[] { "cat /data/part-2.txt | wc -c" },
            });
            var prune = await workspace.CallVerbAsync(noEnvironment, "datasets", "prune", "0");

            Assert.Equal(0, prefetch.ExitCode);
            Assert.Contains("3 objects: 0.0 MiB fetched, 0 already cached.", prefetch.Stdout);
            Assert.Equal(1, refused.ExitCode);
            Assert.Contains("is not allowed", refused.Stderr);
            Assert.Equal(0, listing.ExitCode);
            Assert.Contains("local://corpus/text/part-2.txt", listing.Stdout);
            Assert.Contains("3 objects", listing.Stdout);
            Assert.Equal("success", run.Result.Outcome);
            Assert.Contains("3 objects from the host cache", run.Log);
            Assert.Contains("3000", run.Log);
            // Just used: inside the quiet period, so nothing goes.
            Assert.Contains("removed 0.0 MiB", prune.Stdout);
        }
        finally
        {
            Directory.Delete(storeRoot, recursive: true);
        }
    }
}

/// <summary>Keys that cannot be files, stored in the real s3rver, reach a job as warnings and never as files outside the view.</summary>
public sealed class UnsafeKeyTests
{
    [Fact]
    public async Task Keys_with_dot_dot_a_leading_slash_or_a_file_directory_clash_never_write_outside_the_view()
    {
        Testbed.Require();
        var bucket = "unsafe-" + Guid.NewGuid().ToString("N")[..10];
        using (var s3 = S3Testbed.Client())
        {
            await S3Testbed.CreateBucketAsync(s3, bucket);
            // "..", "." and leading-slash keys cannot be stored in s3rver: the SDK's URI handling
            // collapses dot segments before the request leaves, and s3rver's router answers 404
            // to an empty segment. Those keys are covered by the unit tests of ObjectKeyPaths;
            // a file/directory clash is the hostile shape s3rver can hold.
            foreach (var key in new[] { "data/ok.txt", "data/clash", "data/clash/inner.txt", "data/deep/clash2", "data/deep/clash2/x/y.txt" })
                await S3Testbed.PutAsync(s3, bucket, key, System.Text.Encoding.UTF8.GetBytes("content of " + key));
            var listed = await s3.ListObjectsV2Async(new Amazon.S3.Model.ListObjectsV2Request { BucketName = bucket }, TestContext.Current.CancellationToken);
            // The test is only meaningful if s3rver kept the hostile keys as keys.
            Assert.Contains("data/clash/inner.txt", (listed.S3Objects ?? []).Select(item => item.Key));
            Assert.Contains("data/clash", (listed.S3Objects ?? []).Select(item => item.Key));
        }

        using var workspace = new ExecutorWorkspace(extraConfig: S3Testbed.StoreConfig("s3", S3Testbed.Endpoint, $"\"{bucket}\""));
        var job = await workspace.SimulateAsync(new
        {
            job_id = 7901,
            image = Testbed.TestImage,
            variables = new Dictionary<string, string> { ["DATASETS"] = $"s3://{bucket}/data/ -> /data/set" },
            script = new[] { "find /data -type f | sort > \"$CI_PROJECT_DIR/files.txt\"" },
        });

        Assert.True(job.Result.Outcome == "success", job.Log);
        var files = File.ReadAllLines(Path.Combine(workspace.ProjectDirOnHost(7901), "files.txt"));
        Assert.Contains("/data/set/ok.txt", files);
        // A file and a directory of one name: the file side is left out, the directory's files stay.
        Assert.Contains("/data/set/clash/inner.txt", files);
        Assert.Contains("/data/set/deep/clash2/x/y.txt", files);
        Assert.Equal(3, files.Length);
        Assert.All(files, file => Assert.StartsWith("/data/set/", file));
        Assert.Contains("left out", job.Log);
    }
}
