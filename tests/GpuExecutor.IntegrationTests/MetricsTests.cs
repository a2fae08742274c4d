using System.Globalization;
using System.Text.RegularExpressions;

namespace GpuExecutor.IntegrationTests;

/// <summary>
/// The host's Prometheus textfile through the simulator on the test bed: its values after a
/// scripted sequence of jobs, promtool's check of it, and its atomic replacement.
/// </summary>
public sealed partial class MetricsTests
{
    private static string TextfileOf(ExecutorWorkspace workspace) => Path.Combine(workspace.Root, "textfile", "gpu_executor.prom");

    private static ExecutorWorkspace MetricsHost(string extraConfig = "")
    {
        var workspace = GpuTelemetryTests.ThreeGpuHost($"[metrics]\ntextfile_dir = \"{{ROOT}}/textfile\"\n{extraConfig}");
        // The workspace's root is known only once it exists.
        File.WriteAllText(workspace.ConfigPath, File.ReadAllText(workspace.ConfigPath).Replace("{ROOT}", workspace.Root, StringComparison.Ordinal));
        Directory.CreateDirectory(Path.Combine(workspace.Root, "textfile"));
        return workspace;
    }

    /// <summary>The file's samples, by series ("name{labels}"), as Prometheus would read them.</summary>
    private static Dictionary<string, double> Parse(string text)
    {
        var values = new Dictionary<string, double>(StringComparer.Ordinal);
        foreach (var line in text.Split('\n', StringSplitOptions.RemoveEmptyEntries).Where(line => !line.StartsWith('#')))
        {
            var space = line.LastIndexOf(' ');
            values[line[..space]] = double.Parse(line[(space + 1)..], CultureInfo.InvariantCulture);
        }
        return values;
    }

    private static async Task AssertPromtoolPassesAsync(string path)
    {
        if (!File.Exists("/usr/bin/promtool"))
            Testbed.Missing("promtool is not installed (Debian's prometheus package; scripts/testbed.sh installs it)");
        // promtool reads the exposition on its standard input.
        var (exitCode, stdout, stderr) = await Testbed.RunAsync("/bin/bash", ["-c", "exec /usr/bin/promtool check metrics < \"$1\"", "promtool", path], null, null, TimeSpan.FromSeconds(30));
        Assert.True(exitCode == 0 && stdout.Trim().Length == 0 && stderr.Trim().Length == 0, $"promtool check metrics: exit {exitCode}\n{stdout}\n{stderr}\n{await File.ReadAllTextAsync(path, TestContext.Current.CancellationToken)}");
    }

    [Fact]
    public async Task After_two_gpu_jobs_a_wait_a_cold_and_a_warm_dataset_and_a_failed_then_good_commit_the_file_says_so_and_passes_promtool()
    {
        var bucket = "metrics-" + Guid.NewGuid().ToString("N")[..8];
        var objects = new[] { 1000, 2000, 3000 };
        using (var client = S3Testbed.Client())
        {
            await S3Testbed.CreateBucketAsync(client, bucket);
            for (var index = 0; index < objects.Length; index++)
                await S3Testbed.PutAsync(client, bucket, $"digits/part-{index}.bin", new byte[objects[index]]);
        }
        // The store refuses the checkpoint's blobs until the agent has logged a failed commit;
        // its next attempt succeeds. (The SDK retries a 503 itself: one refused PUT is not enough.)
        var blobsRefused = 1;
        using var proxy = new CountingProxy(S3Testbed.Endpoint)
        {
            PutFaultForPath = path => path.Contains("/blobs/", StringComparison.Ordinal) && Volatile.Read(ref blobsRefused) == 1 ? InjectedFault.ServiceUnavailable : InjectedFault.None,
        };
        using var workspace = MetricsHost($"""
            {S3Testbed.StoreConfig("s3", proxy.Endpoint, $"\"{bucket}\"")}
            [checkpoints]
            store = "s3"
            bucket = "{bucket}"
            quiet_seconds = 1
            """);
        var dataset = new Dictionary<string, string> { ["DATASETS"] = $"s3://{bucket}/digits/ -> /data/digits" };

        // Job 1 holds both GPUs of the pool, with the dataset cold and a checkpoint to commit.
        var first = workspace.SimulateAsync(new
        {
            job_id = 8801L,
            variables = new Dictionary<string, string>(dataset) { ["GPU_COUNT"] = "2", ["CHECKPOINTS"] = "on", ["CHECKPOINT_RUN_KEY"] = "metrics-run" },
            script = new[] { "head -c 4096 /dev/urandom > \"$CHECKPOINT_DIR/model.bin\"", "sleep 14" },
        });
        var agentLog = Path.Combine(workspace.Root, "state", "checkpoints", "p1-metrics-run", "agent-8801.log");
        await WaitForAsync(() => File.Exists(agentLog) && File.ReadAllText(agentLog).Contains("commit failed", StringComparison.Ordinal), "the agent never tried to commit");
        Volatile.Write(ref blobsRefused, 0);
        var textfile = TextfileOf(workspace);
        await WaitForAsync(() => File.Exists(textfile) && Parse(File.ReadAllText(textfile)).GetValueOrDefault("gpu_executor_gpu_utilization_ratio{gpu=\"0\",uuid=\"GPU-t0\"}") > 0, "job 1's GPUs were never sampled into the metrics");

        // Job 2 asks for one GPU with the dataset warm, and waits for job 1's.
        var second = workspace.SimulateAsync(new
        {
            job_id = 8802L,
            variables = new Dictionary<string, string>(dataset) { ["GPU_COUNT"] = "1" },
            script = new[] { "sleep 1" },
        });
        await WaitForAsync(() => Parse(File.ReadAllText(textfile)).GetValueOrDefault("gpu_executor_gpu_waiting_jobs") == 1, "job 2's wait never showed in the metrics");
        var during = Parse(File.ReadAllText(textfile));
        Assert.Equal(1, during["gpu_executor_gpu_held{gpu=\"0\",uuid=\"GPU-t0\",model=\"NVIDIA L4\"}"]);
        Assert.Equal(1, during["gpu_executor_gpu_held{gpu=\"2\",uuid=\"GPU-t2\",model=\"NVIDIA L4\"}"]);
        Assert.False(during.ContainsKey("gpu_executor_gpu_held{gpu=\"1\",uuid=\"GPU-t1\",model=\"NVIDIA L4\"}"), "GPU 1 is outside the pool");
        Assert.Equal(1, during["gpu_executor_gpu_holder_info{gpu=\"2\",uuid=\"GPU-t2\",job=\"8801\",project=\"1\"}"]);
        Assert.Equal(0, during["gpu_executor_gpu_utilization_ratio{gpu=\"2\",uuid=\"GPU-t2\"}"]);
        Assert.Equal(300 * 1048576, during["gpu_executor_gpu_memory_used_bytes{gpu=\"2\",uuid=\"GPU-t2\"}"]);
        Assert.Equal(1, during["gpu_executor_checkpoint_active_runs"]);
        Assert.InRange(during["gpu_executor_checkpoint_since_safe_commit_seconds{run=\"p1-metrics-run\"}"], 0, 60);
        await AssertPromtoolPassesAsync(textfile);

        var firstJob = await first;
        var secondJob = await second;
        Assert.True(firstJob.Result.Outcome == "success", firstJob.Log);
        Assert.True(secondJob.Result.Outcome == "success", secondJob.Log);
        Assert.Contains("Waiting for 1 GPU", secondJob.Log);

        // After both cleanups (the last verb of each job rewrites the file).
        var after = Parse(File.ReadAllText(textfile));
        Assert.Equal(1, after["gpu_executor_build_info{version=\"0.2.0\"}"]);
        Assert.Equal(1, after["gpu_executor_docker_up"]);
        Assert.All(after.Where(pair => pair.Key.StartsWith("gpu_executor_gpu_held{", StringComparison.Ordinal)), pair => Assert.Equal(0, pair.Value));
        Assert.DoesNotContain(after.Keys, key => key.StartsWith("gpu_executor_gpu_holder_info", StringComparison.Ordinal));
        Assert.Equal(0, after["gpu_executor_gpu_waiting_jobs"]);
        Assert.Equal(0, after["gpu_executor_gpu_oldest_wait_seconds"]);
        // The dataset: cold for job 1 (3 misses, every byte fetched), warm for job 2 (3 hits).
        Assert.Equal(3, after["gpu_executor_dataset_cache_misses_total"]);
        Assert.Equal(3, after["gpu_executor_dataset_cache_hits_total"]);
        Assert.Equal(objects.Sum(), after["gpu_executor_dataset_fetched_bytes_total"]);
        Assert.Equal(3, after["gpu_executor_dataset_cache_objects"]);
        Assert.Equal(objects.Sum(), after["gpu_executor_dataset_cache_bytes"]);
        Assert.Equal(0, after["gpu_executor_dataset_cache_evictions_total"]);
        // The checkpoint: one failed attempt, then one commit of its 4 KiB.
        Assert.True(after["gpu_executor_checkpoint_commit_failures_total"] == 1, File.ReadAllText(agentLog));
        Assert.Equal(1, after["gpu_executor_checkpoint_commits_total"]);
        Assert.Equal(4096, after["gpu_executor_checkpoint_uploaded_bytes_total"]);
        Assert.Equal(0, after["gpu_executor_reattaches_total"]);
        Assert.Equal(0, after["gpu_executor_continuations_total"]);
        // Every protocol verb call of both jobs, by outcome.
        Assert.Equal(2, after["gpu_executor_verb_calls_total{verb=\"prepare\",outcome=\"success\"}"]);
        Assert.Equal(2, after["gpu_executor_verb_calls_total{verb=\"cleanup\",outcome=\"success\"}"]);
        Assert.Equal(2, after["gpu_executor_verb_calls_total{verb=\"config\",outcome=\"success\"}"]);
        // The simulator names a `run` call after its stage.
        var runs = firstJob.CallNames.Concat(secondJob.CallNames).Count(name => name is not ("config" or "prepare" or "cleanup"));
        Assert.Equal(runs, after["gpu_executor_verb_calls_total{verb=\"run\",outcome=\"success\"}"]);
        await AssertPromtoolPassesAsync(textfile);
    }

    [Fact]
    public async Task No_reader_ever_sees_a_half_written_file_while_it_is_rewritten_fifty_times()
    {
        using var workspace = MetricsHost();
        var textfile = TextfileOf(workspace);
        Assert.Equal(0, (await workspace.CallVerbAsync(new Dictionary<string, string?>(), "metrics")).ExitCode);
        var whole = await File.ReadAllTextAsync(textfile, TestContext.Current.CancellationToken);
        Assert.StartsWith("# HELP gpu_executor_build_info", whole);
        await AssertPromtoolPassesAsync(textfile);

        using var stop = new CancellationTokenSource();
        var reads = 0;
        var reader = Task.Run(() =>
        {
            while (!stop.IsCancellationRequested)
            {
                var text = File.ReadAllText(textfile);
                // Whole: the first family's HELP, a family that every file has near its end, a
                // final newline, and every sample line a number.
                if (!text.StartsWith("# HELP gpu_executor_build_info", StringComparison.Ordinal) || !text.EndsWith('\n')
                    || !text.Contains("\ngpu_executor_continuations_refused_total ", StringComparison.Ordinal) || !Safe(() => Parse(text).Count > 10))
                    throw new Xunit.Sdk.XunitException($"read {reads} saw a partial file ({text.Length} bytes):\n{text}");
                reads++;
            }
        }, TestContext.Current.CancellationToken);
        for (var write = 0; write < 50; write++)
        {
            var (exitCode, _, stderr) = await workspace.CallVerbAsync(new Dictionary<string, string?>(), "metrics");
            Assert.True(exitCode == 0, stderr);
        }
        await stop.CancelAsync();
        await reader;
        Assert.True(reads > 50, $"the reader read only {reads} times");
        // The file a call writes counts the calls before it: 50 of the 51. Nothing is left beside it.
        Assert.Equal(50, Parse(await File.ReadAllTextAsync(textfile, TestContext.Current.CancellationToken))["gpu_executor_verb_calls_total{verb=\"metrics\",outcome=\"success\"}"]);
        Assert.Equal(["gpu_executor.prom"], Directory.GetFiles(Path.GetDirectoryName(textfile)!).Select(Path.GetFileName));
    }

    private static async Task WaitForAsync(Func<bool> condition, string failure)
    {
        var giveUp = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (!Safe(condition))
        {
            Assert.True(DateTime.UtcNow < giveUp, failure);
            await Task.Delay(200);
        }
    }

    private static bool Safe(Func<bool> condition)
    {
        try
        {
            return condition();
        }
        catch (Exception error) when (error is IOException or FormatException or ArgumentOutOfRangeException)
        {
            return false;
        }
    }
}

public sealed class AlertRuleCheckTests
{
    [Fact]
    public async Task The_readmes_alert_rules_pass_promtool_and_fire_on_their_test_series_only()
    {
        if (!File.Exists("/usr/bin/promtool"))
            Testbed.Missing("promtool is not installed (Debian's prometheus package; scripts/testbed.sh installs it)");
        var directory = Path.Combine(Testbed.RepositoryRoot, "examples", "prometheus");
        var check = await Testbed.RunAsync("/usr/bin/promtool", ["check", "rules", "gpu-executor.rules.yml"], null, directory, TimeSpan.FromSeconds(30));
        Assert.True(check.ExitCode == 0, check.Stdout + check.Stderr);
        Assert.Contains("SUCCESS: 3 rules found", check.Stdout + check.Stderr);
        var test = await Testbed.RunAsync("/usr/bin/promtool", ["test", "rules", "gpu-executor.rules.test.yml"], null, directory, TimeSpan.FromSeconds(30));
        Assert.True(test.ExitCode == 0, test.Stdout + test.Stderr);
    }
}
