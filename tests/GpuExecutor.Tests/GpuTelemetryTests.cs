using GpuExecutor.Configuration;
using GpuExecutor.Containers;
using GpuExecutor.Gpus;
using GpuExecutor.Telemetry;
using GpuExecutor.Tests.Fakes;
using GpuExecutor.Outcomes;
using GpuExecutor.Workflows;

namespace GpuExecutor.Tests;

public sealed class GpuTelemetryTests : IDisposable
{
    private readonly string _stateDir = Directory.CreateTempSubdirectory("gpu-executor-telemetry").FullName;

    public void Dispose() => Directory.Delete(_stateDir, recursive: true);

    private static readonly DateTimeOffset Start = new(2026, 12, 1, 10, 0, 0, TimeSpan.Zero);

    private static GpuSample Sample(int second, string uuid, int index, double? utilization, double memory = 100, double? power = 50) =>
        new(Start.AddSeconds(second), uuid, index, utilization, 5, memory, power, 40, 1400);

    [Fact]
    public void The_report_has_each_gpus_mean_p95_peak_memory_mean_power_and_the_gpu_hours()
    {
        // GPU 0: 1..20 % over 20 samples; GPU 1: always 0 %, the idle one.
        var samples = Enumerable.Range(1, 20).SelectMany(second => new[]
        {
            Sample(second * 10, "GPU-a", 0, second, memory: 1000 + second, power: second % 2 == 0 ? 100 : 200),
            Sample(second * 10, "GPU-b", 1, 0, memory: 5, power: null),
        }).ToList();

        var report = GpuUsageReport.From(samples, TimeSpan.FromSeconds(10), idlePercent: 10);

        var busy = report.Gpus[0];
        Assert.Equal(("GPU-a", 0, 20), (busy.Uuid, busy.Index, busy.Samples));
        Assert.Equal(10.5, busy.MeanUtilizationPercent, 6);
        Assert.Equal(19, busy.P95UtilizationPercent);
        Assert.Equal(1020, busy.PeakMemoryMiB);
        Assert.Equal(150, busy.MeanPowerWatts);
        Assert.Equal(0.45, busy.IdleFraction, 6);
        Assert.Equal(TimeSpan.FromSeconds(200), busy.Held);
        Assert.Null(report.Gpus[1].MeanPowerWatts);
        Assert.Equal(2 * 200 / 3600.0, report.GpuHours, 9);
        Assert.Equal(["GPU-b"], report.Idle.Select(gpu => gpu.Uuid));
        Assert.Contains("WARNING: GPU 1 averaged 0% for 3.3 min (under 10% in 100% of its samples): did the job use every GPU it asked for?", GpuUsageReport.IdleWarning(report.Idle[0], 10));
        Assert.Contains(report.TableLines(), line => line.Contains("2 GPU(s) for 3.3 min: 0.111 GPU-hours (40 samples, one every 10 s).", StringComparison.Ordinal));
    }

    [Fact]
    public void Samples_round_trip_through_the_csv_and_unknown_values_stay_unknown()
    {
        var sample = Sample(5, "GPU-a", 3, null, power: null);
        var line = sample.ToCsv();
        Assert.Equal(8, line.Count(character => character == ','));
        Assert.Equal(sample, GpuSample.FromCsv(line));
        Assert.Null(GpuSample.FromCsv(GpuSample.CsvHeader));
        Assert.Null(GpuSample.FromCsv("2026-12-01T10:00:0"));
    }

    [Fact]
    public void Nvidia_smi_samples_keep_only_the_gpus_asked_for_and_read_not_available_as_unknown()
    {
        const string output = "0, GPU-a, 97, 40, 20480, 301.55, 71, 1980\n1, GPU-other, 100, 100, 1, 1, 1, 1\n2, GPU-b, [N/A], [N/A], 10, [Not Supported], 30, [N/A]\nnot a line\n";

        var samples = NvidiaSmi.ParseSamples(output, ["GPU-a", "GPU-b"], Start);

        Assert.Equal(["GPU-a", "GPU-b"], samples.Select(sample => sample.Uuid));
        Assert.Equal((97.0, 20480.0, 301.55, 1980.0), (samples[0].UtilizationPercent!.Value, samples[0].MemoryUsedMiB!.Value, samples[0].PowerWatts!.Value, samples[0].SmClockMHz!.Value));
        Assert.Null(samples[1].UtilizationPercent);
        Assert.Null(samples[1].PowerWatts);
        Assert.Equal(2, samples[1].Index);
    }

    private (GpuSampler Sampler, FakeContainerDriver Driver, FakeGpuInventory Gpus) SamplerFor(long jobId, string uuids)
    {
        var driver = new FakeContainerDriver();
        driver.Add(JobContainerNames.For(jobId, JobContainerNames.JobRole), new Dictionary<string, string>(JobLabels.SelectJob(jobId))
        {
            [JobLabels.Role] = JobContainerNames.JobRole,
            [JobLabels.Gpus] = uuids,
        });
        var gpus = new FakeGpuInventory("h100-8.query.txt");
        gpus.SampleAnswers.Add("0, GPU-a, 50, 1, 100, 10, 30, 1000\n1, GPU-x, 99, 1, 1, 1, 1, 1\n");
        var config = new ExecutorConfig { StateDir = _stateDir, Telemetry = new TelemetrySettings { GpuSampleInterval = TimeSpan.FromMilliseconds(1) } };
        return (new GpuSampler(config, driver, gpus, _ => { }), driver, gpus);
    }

    [Fact]
    public async Task The_sampler_records_only_the_jobs_gpus_and_ends_when_the_jobs_container_is_gone()
    {
        var (sampler, driver, gpus) = SamplerFor(41, "GPU-a");
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var sampling = sampler.RunAsync(41, timeout.Token);
        while (Volatile.Read(ref gpus.SampleCallCount) < 3 && !sampling.IsCompleted)
            await Task.Delay(5, TestContext.Current.CancellationToken);
        await driver.RemoveAsync(JobContainerNames.For(41, JobContainerNames.JobRole), CancellationToken.None);
        await sampling;

        Assert.False(timeout.IsCancellationRequested);
        var samples = GpuTelemetryFiles.ReadSamples(GpuTelemetryFiles.SamplesFile(_stateDir, 41));
        Assert.True(samples.Count >= 3);
        Assert.All(samples, sample => Assert.Equal("GPU-a", sample.Uuid));
        Assert.Equal(GpuSample.CsvHeader, File.ReadLines(GpuTelemetryFiles.SamplesFile(_stateDir, 41)).First());
    }

    [Fact]
    public async Task A_second_sampler_for_the_same_job_leaves_at_once()
    {
        var (first, _, _) = SamplerFor(42, "GPU-a");
        var (second, _, secondGpus) = SamplerFor(42, "GPU-a");
        using var stop = new CancellationTokenSource();
        var running = first.RunAsync(42, stop.Token);
        while (!File.Exists(GpuTelemetryFiles.SamplesFile(_stateDir, 42)) && !running.IsCompleted)
            await Task.Delay(5, TestContext.Current.CancellationToken);
        Assert.False(running.IsCompleted);

        await second.RunAsync(42, TestContext.Current.CancellationToken);

        Assert.Equal(0, Volatile.Read(ref secondGpus.SampleCallCount));
        await stop.CancelAsync();
        await running;
    }

    [Fact]
    public void The_telemetry_keys_are_read_and_bounded()
    {
        var config = ConfigLoader.Parse("[telemetry]\ngpu_sample_seconds = 5\nidle_utilization_percent = 3\n", "test.toml");
        Assert.Equal((TimeSpan.FromSeconds(5), 3), (config.Telemetry.GpuSampleInterval, config.Telemetry.IdleUtilizationPercent));
        Assert.Equal(TimeSpan.FromSeconds(10), ConfigLoader.Parse("", "test.toml").Telemetry.GpuSampleInterval);
        Assert.Throws<ConfigurationException>(() => ConfigLoader.Parse("[telemetry]\nidle_utilization_percent = 101\n", "test.toml"));
        Assert.Throws<ConfigurationException>(() => ConfigLoader.Parse("[telemetry]\ngpu_sample_seconds = \"fast\"\n", "test.toml"));
    }
}

public sealed class ProjectSamplesFileTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("gpu-executor-project").FullName;

    public void Dispose() => Directory.Delete(_root, recursive: true);

    [Fact]
    public void The_project_directory_is_read_only_as_plain_names_below_the_builds_mount()
    {
        var config = new ExecutorConfig();
        var builds = config.Builds.ContainerDir;
        Assert.Equal(["group", "project"], Jobs.JobWorkspace.ProjectDirectoryBelowBuilds(config, builds + "/group//project/"));
        Assert.Null(Jobs.JobWorkspace.ProjectDirectoryBelowBuilds(config, builds + "/group/../../etc"));
        Assert.Null(Jobs.JobWorkspace.ProjectDirectoryBelowBuilds(config, "/etc/gpu-executor"));
        Assert.Null(Jobs.JobWorkspace.ProjectDirectoryBelowBuilds(config, builds + "-other/project"));
        Assert.Null(Jobs.JobWorkspace.ProjectDirectoryBelowBuilds(config, builds));
        Assert.Null(Jobs.JobWorkspace.ProjectDirectoryBelowBuilds(config, null));
    }

    [Fact]
    public void The_file_is_written_below_the_project_and_replaces_what_stood_at_its_name()
    {
        Directory.CreateDirectory(Path.Combine(_root, "group", "project"));
        Assert.Null(HostFiles.NoFollowFiles.ReplaceFileBeneath(_root, ["group", "project", ".gpu-executor"], "gpu-usage.csv", "a,b\n"u8));
        var file = Path.Combine(_root, "group", "project", ".gpu-executor", "gpu-usage.csv");
        Assert.Equal("a,b\n", File.ReadAllText(file));

        // A symlink the job planted at the name is replaced by the file, and its target untouched.
        var target = Path.Combine(_root, "host-secret");
        File.WriteAllText(target, "secret");
        File.Delete(file);
        File.CreateSymbolicLink(file, target);
        Assert.Null(HostFiles.NoFollowFiles.ReplaceFileBeneath(_root, ["group", "project", ".gpu-executor"], "gpu-usage.csv", "c,d\n"u8));
        Assert.Equal("secret", File.ReadAllText(target));
        Assert.Null(new FileInfo(file).LinkTarget);
        Assert.Equal("c,d\n", File.ReadAllText(file));
        Assert.Empty(Directory.GetFiles(Path.GetDirectoryName(file)!, ".*tmp*"));
    }

    [Fact]
    public void A_symlink_anywhere_on_the_way_stops_the_write()
    {
        var elsewhere = Directory.CreateDirectory(Path.Combine(_root, "elsewhere")).FullName;
        Directory.CreateDirectory(Path.Combine(_root, "group"));
        Directory.CreateSymbolicLink(Path.Combine(_root, "group", "project"), elsewhere);
        Assert.Contains("not a directory", HostFiles.NoFollowFiles.ReplaceFileBeneath(_root, ["group", "project", ".gpu-executor"], "gpu-usage.csv", "x\n"u8));

        Directory.CreateDirectory(Path.Combine(_root, "real"));
        Directory.CreateSymbolicLink(Path.Combine(_root, "real", ".gpu-executor"), elsewhere);
        Assert.Contains("not a directory", HostFiles.NoFollowFiles.ReplaceFileBeneath(_root, ["real", ".gpu-executor"], "gpu-usage.csv", "x\n"u8));
        Assert.Empty(Directory.GetFileSystemEntries(elsewhere));

        Assert.Contains("not a directory name", HostFiles.NoFollowFiles.ReplaceFileBeneath(_root, ["real", ".."], "gpu-usage.csv", "x\n"u8));
    }
}
