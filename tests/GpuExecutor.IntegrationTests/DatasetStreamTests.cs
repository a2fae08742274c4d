using System.Security.Cryptography;

namespace GpuExecutor.IntegrationTests;

/// <summary>
/// Streamed datasets (issue 14) through the published binary, from s3rver behind a proxy that
/// slows every object down: the job starts with the first shards, reads the others as they
/// appear, whole and verified, and a store that fails mid-stream fails the job as a system
/// failure naming the object.
/// </summary>
public sealed class DatasetStreamTests
{
    private const int Shards = 12;

    private static async Task<(string Bucket, Dictionary<string, string> Sums)> ShardsAsync()
    {
        using var s3 = S3Testbed.Client();
        var bucket = "stream-" + Guid.NewGuid().ToString("N")[..8];
        await S3Testbed.CreateBucketAsync(s3, bucket);
        var sums = new Dictionary<string, string>();
        for (var index = 0; index < Shards; index++)
        {
            var content = RandomNumberGenerator.GetBytes((1 << 20) + index);
            await S3Testbed.PutAsync(s3, bucket, $"shards/shard-{index:D2}.tar", content);
            sums[$"shard-{index:D2}.tar"] = Convert.ToHexStringLower(SHA256.HashData(content));
        }
        return (bucket, sums);
    }

    private static ExecutorWorkspace Workspace(CountingProxy proxy, string bucket) => new(extraConfig: $"""
        {S3Testbed.StoreConfig("s3", proxy.Endpoint, $"\"{bucket}\"")}
        [datasets]
        stream_first_objects = 2
        stream_parallel_objects = 2
        """);

    private static Dictionary<string, string> SumsOf(ExecutorWorkspace workspace, long jobId) =>
        File.ReadAllLines(Path.Combine(workspace.ProjectDirOnHost(jobId), "sums.txt")).Select(line => line.Split(' ')).ToDictionary(parts => parts[1], parts => parts[0]);

    /// <summary>
    /// A reader that needs each shard only when it gets to it: it waits for the file to appear
    /// (it appears whole), stops if the index says the stream failed, hashes what it read, and
    /// prints a "step N" line per shard, as a trainer would per batch.
    /// </summary>
    private static string[] ReaderScript() =>
    [
        "ls /data/shards | grep -c shard- > \"$CI_PROJECT_DIR/present-at-start.txt\"",
        "echo \"$EPOCHREALTIME\" > \"$CI_PROJECT_DIR/first-read.txt\"",
        $"for n in $(seq -w 0 {Shards - 1}); do f=/data/shards/shard-$n.tar; t0=$EPOCHREALTIME; " +
        "until [ -f \"$f\" ]; do grep -q '\"failed\":\"' /data/shards/.gpu-executor-index.json && { echo \"stream failed before $f\"; exit 3; }; sleep 0.1; done; " +
        // Its waits, where the executor reads them, as examples/datasets/stream_wait.py records them.
        "echo \"$(awk \"BEGIN { print $EPOCHREALTIME - $t0 }\") $f\" >> \"${GPU_EXECUTOR_DATASET_WAITS:-/dev/null}\"; " +
        "echo \"$(sha256sum \"$f\" | cut -d' ' -f1) shard-$n.tar\" >> \"$CI_PROJECT_DIR/sums.txt\"; echo \"step $((10#$n + 1)) $EPOCHREALTIME\"; done",
        "echo \"$EPOCHREALTIME\" > \"$CI_PROJECT_DIR/last-read.txt\"",
        "cat /data/shards/.gpu-executor-index.json > \"$CI_PROJECT_DIR/index.json\" 2>/dev/null || true",
    ];

    private static object ReaderJob(long jobId, string bucket, string mode = "stream") => new
    {
        job_id = jobId,
        image = Testbed.TestImage,
        variables = new Dictionary<string, string> { ["DATASETS"] = $"s3://{bucket}/shards/ -> /data/shards mode={mode}" },
        script = ReaderScript(),
        timeout = 600,
    };

    [Fact]
    public async Task A_streamed_dataset_starts_the_job_with_its_first_shards_and_the_rest_arrive_whole_verified_and_fetched_once()
    {
        var (bucket, sums) = await ShardsAsync();
        // Every object GET takes 2 s: the whole dataset would take 12 s to prefetch, two at a time.
        using var proxy = new CountingProxy(S3Testbed.Endpoint, faultFor: _ => InjectedFault.SlowResponse);
        using var workspace = Workspace(proxy, bucket);

        var job = await workspace.SimulateAsync(ReaderJob(7901, bucket));

        Assert.True(job.Result.Outcome == "success", job.Log);
        Assert.Contains($"The job starts now; the other {Shards - 2} objects", job.Log);
        var projectDir = workspace.ProjectDirOnHost(7901);
        // The job began with only the first shards in its view.
        Assert.True(int.Parse(File.ReadAllText(Path.Combine(projectDir, "present-at-start.txt")).Trim()) < Shards, job.Log);
        var read = File.ReadAllLines(Path.Combine(projectDir, "sums.txt")).Select(line => line.Split(' ')).ToDictionary(parts => parts[1], parts => parts[0]);
        Assert.Equal(sums.OrderBy(pair => pair.Key), read.OrderBy(pair => pair.Key));
        Assert.Contains("\"complete\":true", File.ReadAllText(Path.Combine(projectDir, "index.json")));
        Assert.Matches($@"Dataset stream: {Shards - 2} of {Shards - 2} objects in after the job started", job.Log);
        Assert.Matches(@"Datasets stream in: the job's script starts \d+\.\d s after prepare began", job.Log);
        Assert.Matches($@"The job waited on data \d+\.\d s in all \({Shards} waits", job.Log);
        // Each object was fetched once, by prepare or by the stream.
        Assert.Equal(Shards, proxy.ObjectGets);
        // Nothing of the stream outlives the job: its views are gone with cleanup.
        Assert.False(Directory.Exists(Path.Combine(workspace.Root, "state", "datasets", "views", "job-7901")));
    }

    [Fact]
    public async Task A_job_that_adopts_a_streaming_training_keeps_its_stream_and_its_cleanup_ends_it()
    {
        var (bucket, sums) = await ShardsAsync();
        using var proxy = new CountingProxy(S3Testbed.Endpoint, faultFor: _ => InjectedFault.SlowResponse);
        using var workspace = Workspace(proxy, bucket);
        // The reader as the training of a run, so that a retry of its job may adopt it.
        object Training(long jobId) => new
        {
            job_id = jobId,
            name = "train",
            image = Testbed.TestImage,
            variables = new Dictionary<string, string> { ["DATASETS"] = $"s3://{bucket}/shards/ -> /data/shards mode=stream", ["CHECKPOINTS"] = "on" },
            script = ReaderScript(),
            timeout = 600,
        };
        // Its runner dies at the third shard, with most of the stream still to come.
        await ReferenceTrainer.RunUntilTheRunnerDiesAsync(workspace, Training(7951), atStep: 3);
        var fetcher = await Testbed.RunAsync("pgrep", ["-f", "datasets stream 7951"], null, null);
        Assert.True(fetcher.ExitCode == 0, "the stream ended with its job's runner");

        var retry = await workspace.SimulateAsync(Training(7952));

        Assert.True(retry.Result.Outcome == "success", retry.Log);
        Assert.Contains("This job adopts it", retry.Log);
        // The adopted training read every shard, whole and verified, from the stream its first job started.
        Assert.Equal(sums.OrderBy(pair => pair.Key), SumsOf(workspace, 7951).OrderBy(pair => pair.Key));
        Assert.Matches($@"Dataset stream: {Shards - 2} of {Shards - 2} objects in after the job started", retry.Log);
        Assert.Matches($@"The job waited on data \d+\.\d s in all \({Shards} waits", retry.Log);
        Assert.Equal(Shards, proxy.ObjectGets);
        // The adopter's cleanup ended the stream and removed the first job's views.
        Assert.False(Directory.Exists(Path.Combine(workspace.Root, "state", "datasets", "views", "job-7951")), "the adopted job's views are still there");
        var fetchers = await Testbed.RunAsync("pgrep", ["-f", "datasets stream 795"], null, null);
        Assert.True(fetchers.ExitCode != 0, $"the stream outlived the adopting job: {fetchers.Stdout}");
    }

    [Fact]
    public async Task A_store_that_fails_mid_stream_fails_the_job_as_a_system_failure_naming_the_object()
    {
        var (bucket, _) = await ShardsAsync();
        // The first five object GETs go through; from the sixth on the store answers 503.
        using var proxy = new CountingProxy(S3Testbed.Endpoint, faultFor: number => number > 5 ? InjectedFault.ServiceUnavailable : InjectedFault.None);
        using var workspace = Workspace(proxy, bucket);

        var job = await workspace.SimulateAsync(ReaderJob(7911, bucket));

        Assert.True(job.Result.Outcome == "system_failure", job.Log);
        Assert.Matches(@"the dataset stream failed, and stage 'build_script' ended with exit code 3: object 'shards/shard-\d\d\.tar' of s3://stream-[0-9a-f]+ could not be fetched", job.Log);
        Assert.Contains("stream failed before /data/shards/shard-", job.Log);
    }

    [Fact]
    public async Task A_streaming_job_and_a_prefetching_job_of_the_same_dataset_at_once_fetch_each_object_once_and_read_the_same_bytes()
    {
        var (bucket, sums) = await ShardsAsync();
        using var proxy = new CountingProxy(S3Testbed.Endpoint, faultFor: _ => InjectedFault.SlowResponse);
        using var workspace = Workspace(proxy, bucket);

        var jobs = await Task.WhenAll(workspace.SimulateAsync(ReaderJob(7931, bucket)), workspace.SimulateAsync(ReaderJob(7932, bucket, mode: "prefetch")));

        Assert.All(jobs, job => Assert.True(job.Result.Outcome == "success", job.Log));
        Assert.Equal(sums.OrderBy(pair => pair.Key), SumsOf(workspace, 7931).OrderBy(pair => pair.Key));
        Assert.Equal(sums.OrderBy(pair => pair.Key), SumsOf(workspace, 7932).OrderBy(pair => pair.Key));
        // The host cache's per-object locks hold across the two: one GET per object in all.
        Assert.Equal(Shards, proxy.ObjectGets);
    }

    [Fact]
    public async Task A_job_cancelled_mid_stream_stops_its_fetcher_and_leaves_only_whole_objects_and_the_next_job_fetches_only_the_rest()
    {
        var (bucket, sums) = await ShardsAsync();
        using var proxy = new CountingProxy(S3Testbed.Endpoint, faultFor: _ => InjectedFault.SlowResponse);
        using var workspace = Workspace(proxy, bucket);

        var cancelled = await workspace.SimulateAsync(ReaderJob(7921, bucket), "--cancel-after", "3");

        Assert.True(cancelled.Result.Outcome == "canceled", cancelled.Log);
        Assert.False(Directory.Exists(Path.Combine(workspace.Root, "state", "datasets", "views", "job-7921")), "the cancelled job's views are still there");
        var fetchers = await Testbed.RunAsync("pgrep", ["-f", "datasets stream 7921"], null, null);
        Assert.True(fetchers.ExitCode != 0, $"the fetcher outlived its job: {fetchers.Stdout}");
        var objects = new DirectoryInfo(Path.Combine(workspace.Root, "state", "datasets", "objects")).GetFiles();
        var whole = objects.Where(file => file.Extension is not (".part" or ".ranges" or ".key")).ToList();
        // Only whole objects count as cached: every one has its full size.
        Assert.All(whole, file => Assert.InRange(file.Length, 1 << 20, (1 << 20) + Shards));
        Assert.True(whole.Count < Shards, $"the stream was not cut short: {whole.Count} objects whole");
        var getsBefore = proxy.ObjectGets;

        var next = await workspace.SimulateAsync(ReaderJob(7922, bucket));

        Assert.True(next.Result.Outcome == "success", next.Log);
        Assert.Equal(sums.OrderBy(pair => pair.Key), SumsOf(workspace, 7922).OrderBy(pair => pair.Key));
        // What was whole is not fetched again.
        Assert.Equal(Shards - whole.Count, proxy.ObjectGets - getsBefore);
    }

    [Fact]
    public async Task A_large_object_cut_off_mid_stream_resumes_in_the_next_job_from_its_range_record()
    {
        using var s3 = S3Testbed.Client();
        var bucket = "stream-" + Guid.NewGuid().ToString("N")[..8];
        await S3Testbed.CreateBucketAsync(s3, bucket);
        var small = RandomNumberGenerator.GetBytes(1 << 20);
        var large = RandomNumberGenerator.GetBytes(96 << 20);
        await S3Testbed.PutAsync(s3, bucket, "shards/shard-00.tar", small);
        await S3Testbed.PutAsync(s3, bucket, "shards/shard-01.tar", large);
        // The small shard comes in prepare (GET 1); the large one streams as three 32 MiB ranges
        // (GETs 2 to 4), of which the last to ask hangs until the job is cancelled.
        var hanging = true;
        using var proxy = new CountingProxy(S3Testbed.Endpoint, faultFor: number => Volatile.Read(ref hanging) && number >= 4 ? InjectedFault.Hang : InjectedFault.None);
        using var workspace = new ExecutorWorkspace(extraConfig: $"""
            {S3Testbed.StoreConfig("s3", proxy.Endpoint, $"\"{bucket}\"")}
            [datasets]
            stream_first_objects = 1
            """);
        object Job(long jobId) => new
        {
            job_id = jobId,
            image = Testbed.TestImage,
            variables = new Dictionary<string, string> { ["DATASETS"] = $"s3://{bucket}/shards/ -> /data/shards mode=stream" },
            script = new[] { "until [ -f /data/shards/shard-01.tar ]; do sleep 0.1; done; sha256sum /data/shards/shard-01.tar > \"$CI_PROJECT_DIR/sum.txt\"" },
            timeout = 600,
        };

        var cancelled = await workspace.SimulateAsync(Job(7941), "--cancel-after", "4");
        Assert.True(cancelled.Result.Outcome == "canceled", cancelled.Log);
        var objects = Path.Combine(workspace.Root, "state", "datasets", "objects");
        Assert.Single(Directory.GetFiles(objects, "*.ranges"));
        Volatile.Write(ref hanging, false);
        var servedBefore = proxy.ObjectBytesServed;

        var next = await workspace.SimulateAsync(Job(7942));

        Assert.True(next.Result.Outcome == "success", next.Log);
        Assert.StartsWith(Convert.ToHexStringLower(SHA256.HashData(large)), File.ReadAllText(Path.Combine(workspace.ProjectDirOnHost(7942), "sum.txt")));
        // Only the range that never came is fetched again: 32 MiB of the 96.
        var served = proxy.ObjectBytesServed - servedBefore;
        Assert.True(served is > 0 and <= 32L << 20, $"the next job fetched {served} bytes of the large object again");
    }
}
