using GpuExecutor.Configuration;
using GpuExecutor.Containers;
using GpuExecutor.Gpus;
using GpuExecutor.Metrics;
using GpuExecutor.Tests.Fakes;
using GpuExecutor.Workflows;

namespace GpuExecutor.Tests;

public sealed class MetricsTests : IDisposable
{
    private readonly string _stateDir = Directory.CreateTempSubdirectory("gpu-executor-metrics").FullName;

    public void Dispose() => Directory.Delete(_stateDir, recursive: true);

    [Fact]
    public void A_label_value_from_a_job_cannot_end_its_line_or_forge_a_label()
    {
        var series = MetricSeries.Of("gpu_executor_x", ("run", "p1-a\"} 1\nevil_metric{x=\"\\"), ("job", "7\t"));
        Assert.Equal("gpu_executor_x{run=\"p1-a\\\"} 1\\nevil_metric{x=\\\"\\\\\",job=\"7_\"}", series);
        Assert.DoesNotContain('\n', series);
        Assert.Equal("gpu_executor_x", MetricSeries.NameOf(series));
        Assert.Equal((series, 2.5), MetricSeries.Parse(series + " 2.5"));
        Assert.Null(MetricSeries.Parse("torn_line_without_a_val"));
    }

    [Fact]
    public async Task Counters_are_kept_only_once_metrics_are_on_and_no_count_is_lost_between_writers()
    {
        Assert.False(MetricCounters.Add(_stateDir, (HostMetrics.CacheHits, 1)));
        Assert.Empty(MetricCounters.Read(_stateDir));

        Directory.CreateDirectory(MetricCounters.DirectoryOf(_stateDir));
        // Eight writers at once, as eight processes would: each count is in the total.
        await Task.WhenAll(Enumerable.Range(0, 8).Select(_ => Task.Run(() =>
        {
            for (var count = 0; count < 25; count++)
                Assert.True(MetricCounters.Add(_stateDir, (HostMetrics.CacheHits, 1), (HostMetrics.FetchedBytes, 10)));
        }, TestContext.Current.CancellationToken)));
        var totals = MetricCounters.Read(_stateDir);
        Assert.Equal(200, totals[HostMetrics.CacheHits]);
        Assert.Equal(2000, totals[HostMetrics.FetchedBytes]);
    }

    [Fact]
    public async Task A_wait_counts_while_its_process_lives_and_a_dead_ones_file_is_swept()
    {
        var since = DateTimeOffset.UtcNow.AddMinutes(-3);
        using (GpuWaits.Register(_stateDir, 41, since))
        {
            // A prepare that was SIGKILLed while it waited left this (pid 2^22 + 1 exceeds pid_max's ceiling).
            File.WriteAllText(Path.Combine(GpuWaits.DirectoryOf(_stateDir), "job-40"), $"4194305 {since.ToUnixTimeMilliseconds()}\n");
            var wait = Assert.Single(GpuWaits.Read(_stateDir));
            Assert.Equal(41, wait.JobId);
            Assert.Equal(since.ToUnixTimeMilliseconds(), wait.Since.ToUnixTimeMilliseconds());

            var config = new ExecutorConfig { StateDir = _stateDir };
            var text = await new HostMetricsTextfile(config, new FakeContainerDriver()).RenderAsync(since.AddMinutes(3), TestContext.Current.CancellationToken);
            Assert.Contains("\ngpu_executor_gpu_waiting_jobs 1\n", text);
            Assert.Matches(@"\ngpu_executor_gpu_oldest_wait_seconds 18\d(\.\d+)?\n", text);

            using (GpuWaits.Register(_stateDir, 42, DateTimeOffset.UtcNow))
                Assert.False(File.Exists(Path.Combine(GpuWaits.DirectoryOf(_stateDir), "job-40")));
        }
        Assert.Empty(GpuWaits.Read(_stateDir));
    }

    [Fact]
    public async Task Every_family_has_its_help_and_type_once_and_the_gpu_ledger_says_who_holds_what()
    {
        GpuPoolRecord.Write(_stateDir, [new GpuDevice(0, "GPU-a", "NVIDIA H100", 80000, 0, 0, false), new GpuDevice(1, "GPU-b", "NVIDIA H100", 80000, 0, 0, false)]);
        var driver = new FakeContainerDriver();
        driver.Add("gpu-executor-7-job", new Dictionary<string, string>
        {
            [JobLabels.Managed] = "true",
            [JobLabels.JobId] = "7",
            [JobLabels.ProjectId] = "42",
            [JobLabels.Gpus] = "GPU-b",
        });
        Directory.CreateDirectory(MetricCounters.DirectoryOf(_stateDir));
        MetricCounters.Add(_stateDir, (MetricSeries.Of(HostMetrics.VerbCalls, ("verb", "prepare"), ("outcome", "success")), 3));
        var config = new ExecutorConfig { StateDir = _stateDir };

        var text = await new HostMetricsTextfile(config, driver).RenderAsync(DateTimeOffset.UtcNow, TestContext.Current.CancellationToken);

        foreach (var family in HostMetrics.Families.Where(family => text.Contains($"\n{family.Name}", StringComparison.Ordinal) || text.StartsWith($"# HELP {family.Name} ", StringComparison.Ordinal)))
        {
            Assert.Single(text.Split('\n'), line => line == $"# TYPE {family.Name} {family.Type}");
            Assert.True(family.Type != "counter" || family.Name.EndsWith("_total", StringComparison.Ordinal), family.Name);
        }
        Assert.Contains("\ngpu_executor_docker_up 1\n", text);
        Assert.Contains("\ngpu_executor_gpu_held{gpu=\"0\",uuid=\"GPU-a\",model=\"NVIDIA H100\"} 0\n", text);
        Assert.Contains("\ngpu_executor_gpu_held{gpu=\"1\",uuid=\"GPU-b\",model=\"NVIDIA H100\"} 1\n", text);
        Assert.Contains("\ngpu_executor_gpu_holder_info{gpu=\"1\",uuid=\"GPU-b\",job=\"7\",project=\"42\"} 1\n", text);
        Assert.Contains("\ngpu_executor_verb_calls_total{verb=\"prepare\",outcome=\"success\"} 3\n", text);
        // Counters nobody has counted yet are there at 0.
        Assert.Contains("\ngpu_executor_checkpoint_commits_total 0\n", text);

        // Docker silent: the ledger's gauges are left out, not guessed.
        driver.Unreachable = true;
        var silent = await new HostMetricsTextfile(config, driver).RenderAsync(DateTimeOffset.UtcNow, TestContext.Current.CancellationToken);
        Assert.Contains("\ngpu_executor_docker_up 0\n", silent);
        Assert.DoesNotContain("gpu_executor_gpu_held{", silent);
    }
}

public sealed partial class AlertRuleTests
{
    [System.Text.RegularExpressions.GeneratedRegex(@"gpu_executor_[a-z_]+")]
    private static partial System.Text.RegularExpressions.Regex MetricName();

    [Fact]
    public void The_example_alert_rules_name_only_metrics_gpu_executor_writes()
    {
        var rules = File.ReadAllText(Path.Combine(RepositoryRoot.Path, "examples", "prometheus", "gpu-executor.rules.yml"));
        var named = MetricName().Matches(rules).Select(match => match.Value).ToHashSet();
        Assert.True(named.Count >= 4, string.Join(", ", named));
        Assert.All(named, name => Assert.Contains(HostMetrics.Families, family => family.Name == name));
    }
}
