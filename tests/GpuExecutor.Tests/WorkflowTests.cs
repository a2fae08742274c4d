using GpuExecutor.Checkpoints;
using GpuExecutor.Configuration;
using GpuExecutor.Containers;
using GpuExecutor.HostFiles;
using GpuExecutor.Outcomes;
using GpuExecutor.Protocol;
using GpuExecutor.Tests.Fakes;
using GpuExecutor.Workflows;

namespace GpuExecutor.Tests;

/// <summary>
/// prepare's and run's decisions, driven through their workflows with a fake container driver
/// and a fake nvidia-smi: no daemon needed.
/// </summary>
public sealed class WorkflowTests : IDisposable
{
    private const string Image = "registry.example/train:1";
    private readonly string _root = Directory.CreateTempSubdirectory("gpu-executor-workflow").FullName;
    private readonly FakeContainerDriver _driver = new();
    private readonly FakeAgentLauncher _agents = new();
    private readonly StringWriter _log = new();

    public void Dispose()
    {
        _driver.Dispose();
        Directory.Delete(_root, recursive: true);
    }

    private ExecutorConfig Config => new()
    {
        StateDir = Path.Combine(_root, "state"),
        Builds = new MountSettings(Path.Combine(_root, "builds"), "/builds"),
        Cache = new MountSettings(Path.Combine(_root, "cache"), "/cache"),
        Images = new ImageSettings { Default = Image },
        Gpus = new GpuSettings { Mode = GpuMode.None, WaitTimeout = TimeSpan.FromSeconds(30) },
    };

    private PrepareJob Prepare(FakeGpuInventory? gpus = null) =>
        new(Config, _driver, gpus ?? new FakeGpuInventory("a100-2.query.txt"), new LocalStores(), _agents, TextWriter.Synchronized(_log));

    private static JobPayload Job(long jobId, Dictionary<string, string>? variables = null) =>
        TestPayloads.Payload(jobId, projectId: 7, variables ?? [], image: Image);

    private static Dictionary<string, string> Labels(long jobId, string runKey, string? gpus = null)
    {
        var labels = new Dictionary<string, string>
        {
            [JobLabels.Managed] = "true",
            [JobLabels.JobId] = jobId.ToString(System.Globalization.CultureInfo.InvariantCulture),
            [JobLabels.ProjectId] = "7",
            [JobLabels.RunKey] = runKey,
            [JobLabels.Role] = JobContainerNames.JobRole,
        };
        if (gpus is not null)
            labels[JobLabels.Gpus] = gpus;
        return labels;
    }

    /// <summary>What `run` leaves while it follows a run's training: the record, beside the main-stage lock.</summary>
    private RunDirectories LeaveTrainingOf(long jobId, string runKey)
    {
        var directories = RunDirectories.For(Config.StateDir, runKey);
        Directory.CreateDirectory(directories.Root);
        File.WriteAllText(directories.MainStageLock, "");
        Reattach.WriteMainStage(directories, new MainStageRecord(jobId, JobContainerNames.For(jobId, JobContainerNames.JobRole), "build_script", "00aa", DateTimeOffset.UtcNow));
        _driver.Add(JobContainerNames.For(jobId, JobContainerNames.JobRole), Labels(jobId, runKey));
        return directories;
    }

    private static readonly Dictionary<string, string> NamedRun = new() { ["CHECKPOINTS"] = "on", ["CHECKPOINT_RUN_KEY"] = "llm" };

    [Fact]
    public async Task Prepare_adopts_a_training_that_no_runner_follows_and_starts_nothing_new()
    {
        LeaveTrainingOf(500, "p7-llm");

        await Prepare().RunAsync(Job(501, NamedRun), TestContext.Current.CancellationToken);

        Assert.Contains("This job adopts it", _log.ToString());
        Assert.Equal(500, Reattach.ReadAdoption(Config.StateDir, 501)?.JobId);
        Assert.Empty(_driver.Created);
        Assert.Empty(_agents.Started);
    }

    [Fact]
    public async Task Prepare_refuses_to_adopt_a_training_that_a_run_still_follows_and_starts_its_own()
    {
        var directories = LeaveTrainingOf(500, "p7-llm");
        // A live `run` holds the lock: someone follows that training.
        using var followed = HostLock.TryAcquire(directories.MainStageLock)!;

        await Prepare().RunAsync(Job(501, NamedRun), TestContext.Current.CancellationToken);

        Assert.Null(Reattach.ReadAdoption(Config.StateDir, 501));
        Assert.Equal(["gpu-executor-501-job"], _driver.Created.Select(spec => spec.Name));
        Assert.Equal([(501L, "p7-llm", "gpu-executor-501-job")], _agents.Started);
        Assert.Contains("WARNING: job 500 of this run is still running", _log.ToString());
    }

    [Fact]
    public async Task Prepare_does_not_adopt_a_training_of_another_image_says_why_and_waits_for_its_lease()
    {
        LeaveTrainingOf(500, "p7-llm");
        var definition = JobDefinition.Of("registry.example/train:0", new Gpus.GpuRequest(0, null, null), null, new CheckpointRequest("p7-llm", Restore: true, PinnedGeneration: null));
        _driver.Add("gpu-executor-500-job", new Dictionary<string, string>(Labels(500, "p7-llm")).Concat(definition.ToLabels()).ToDictionary());
        var config = Config with { Checkpoints = new CheckpointSettings { LeaseWait = TimeSpan.Zero } };
        var (store, repository) = CheckpointStores.Open(new LocalStores(), config, "p7-llm", _ => { });
        using (store)
            await new TrainingLease(repository, config.HostName, config.Checkpoints.LeaseTimeToLive, config.Checkpoints.LeaseClockSkew, _ => { })
                .AcquireAsync(500, "gpu-executor-500-job", _ => Task.FromResult(false), TimeSpan.Zero, TestContext.Current.CancellationToken);

        var prepare = new PrepareJob(config, _driver, new FakeGpuInventory("a100-2.query.txt"), new LocalStores(), _agents, TextWriter.Synchronized(_log));
        var waited = await Assert.ThrowsAsync<SystemFailureException>(() => prepare.RunAsync(Job(501, NamedRun), TestContext.Current.CancellationToken));

        Assert.Contains("Re-attach refused", _log.ToString());
        Assert.Contains("image: the training has registry.example/train:0, this job asks for registry.example/train:1", _log.ToString());
        Assert.DoesNotContain("GPU request:", _log.ToString());
        Assert.Contains($"is being trained by job 500 on host {config.HostName}", waited.Message);
        Assert.Null(Reattach.ReadAdoption(Config.StateDir, 501));
        Assert.Empty(_driver.Created);
    }

    [Fact]
    public async Task Prepare_labels_the_job_container_with_its_definition_and_a_same_definition_retry_adopts()
    {
        await Prepare().RunAsync(Job(500, NamedRun), TestContext.Current.CancellationToken);
        var labels = _driver.Created.Single().Labels;
        Assert.Equal(Image, labels["io.gpu-executor.definition.image"]);
        Assert.Equal("restore latest, continue on", labels["io.gpu-executor.definition.checkpoints"]);

        var directories = RunDirectories.For(Config.StateDir, "p7-llm");
        File.WriteAllText(directories.MainStageLock, "");
        Reattach.WriteMainStage(directories, new MainStageRecord(500, "gpu-executor-500-job", "build_script", "00aa", DateTimeOffset.UtcNow));
        _log.GetStringBuilder().Clear();
        await Prepare().RunAsync(Job(501, NamedRun), TestContext.Current.CancellationToken);
        Assert.Contains("This job adopts it", _log.ToString());
    }

    [Fact]
    public async Task Prepare_refuses_to_adopt_a_training_whose_container_is_gone()
    {
        LeaveTrainingOf(500, "p7-llm");
        await _driver.RemoveAsync("gpu-executor-500-job", TestContext.Current.CancellationToken);

        await Prepare().RunAsync(Job(501, NamedRun), TestContext.Current.CancellationToken);

        Assert.Null(Reattach.ReadAdoption(Config.StateDir, 501));
        Assert.Equal(["gpu-executor-501-job"], _driver.Created.Select(spec => spec.Name));
    }

    [Fact]
    public async Task Prepare_waits_for_GPUs_another_job_holds_and_takes_them_once_freed()
    {
        // Job 400 holds GPU 1 of the two; this job wants both.
        _driver.Add("gpu-executor-400-job", Labels(400, "run-other", gpus: "GPU-b0000000-0000-0000-0000-000000000001"));
        var preparing = Prepare().RunAsync(Job(401, new() { ["GPU_COUNT"] = "2" }), TestContext.Current.CancellationToken);

        var waited = System.Diagnostics.Stopwatch.StartNew();
        while (!_log.ToString().Contains("Waiting for", StringComparison.Ordinal) && waited.Elapsed < TimeSpan.FromSeconds(20))
            await Task.Delay(50, TestContext.Current.CancellationToken);
        Assert.Contains("GPU 1 held by job 400", _log.ToString());
        Assert.Empty(_driver.Created);

        await _driver.RemoveAsync("gpu-executor-400-job", TestContext.Current.CancellationToken);
        await preparing;

        var created = Assert.Single(_driver.Created);
        Assert.Equal("GPU-b0000000-0000-0000-0000-000000000000,GPU-b0000000-0000-0000-0000-000000000001", created.Labels[JobLabels.Gpus]);
        Assert.Equal(created.Labels[JobLabels.Gpus], created.Environment["CUDA_VISIBLE_DEVICES"]);
    }

    [Fact]
    public async Task Prepare_fails_a_request_the_host_can_never_meet_as_a_build_failure_and_creates_nothing()
    {
        var error = await Assert.ThrowsAsync<BuildFailureException>(() => Prepare().RunAsync(Job(402, new() { ["GPU_COUNT"] = "4" }), TestContext.Current.CancellationToken));

        Assert.Contains("asks for 4 GPUs, but this runner has 2", error.Message);
        Assert.Empty(_driver.Created);
    }

    [Fact]
    public async Task Prepare_removes_what_a_failed_attempt_of_the_same_job_left_before_it_creates_anything()
    {
        _driver.Add("gpu-executor-403-job", Labels(403, "run-x"), running: false);
        _driver.Add("gpu-executor-403-helper", Labels(403, "run-x"));
        _driver.Add("gpu-executor-999-job", Labels(999, "run-y"));

        await Prepare().RunAsync(Job(403), TestContext.Current.CancellationToken);

        Assert.Equal(["gpu-executor-403-helper", "gpu-executor-403-job"], _driver.Removed.Order(StringComparer.Ordinal));
        Assert.Contains("Removing gpu-executor-403-job left by an earlier attempt", _log.ToString());
        Assert.Equal(["gpu-executor-403-job", "gpu-executor-999-job"], _driver.Names);
    }

    private RunStage Run() => new(Config, _driver, new LocalStores(), TextWriter.Synchronized(_log));

    [Fact]
    public async Task Run_sends_the_script_to_the_job_container_and_reports_its_exit_code_as_a_build_failure()
    {
        await Prepare().RunAsync(Job(410), TestContext.Current.CancellationToken);
        _driver.RunScript = script => script.Contains("train", StringComparison.Ordinal) ? (3, "epoch 1\n") : (0, "");
        var stdout = new MemoryStream();

        var error = await Assert.ThrowsAsync<BuildFailureException>(() => Run().RunAsync(Job(410), "echo train\n"u8.ToArray(), "build_script", stdout, Stream.Null, TestContext.Current.CancellationToken));

        Assert.Equal(3, error.ScriptExitCode);
        Assert.Equal("epoch 1\n", System.Text.Encoding.UTF8.GetString(stdout.ToArray()));
        Assert.Contains(("gpu-executor-410-job", "echo train\n"), _driver.Scripts);
    }

    [Fact]
    public async Task A_stage_whose_container_is_stopped_from_outside_is_a_system_failure_and_the_stops_echo_stays_out_of_the_log()
    {
        await Prepare().RunAsync(Job(420), TestContext.Current.CancellationToken);
        // The stage server's word that the container itself is stopping, the trainer's own last
        // line, and bash's notice of its child killed by the signal, in one chunk; then exit 143.
        _driver.RunScript = script => script.Contains("train", StringComparison.Ordinal) ? (143, "") : (0, "");
        _driver.ScriptStderr = (script, nonce) => script.Contains("train", StringComparison.Ordinal)
            ? $"before the stop\n\u001egpu-executor:{StageServer.ContainerStopNonce(nonce)}:15\nsaved on the signal\nTerminated\n"
            : "";
        var stderr = new MemoryStream();

        var error = await Assert.ThrowsAsync<SystemFailureException>(() => Run().RunAsync(Job(420), "echo train\n"u8.ToArray(), "build_script", Stream.Null, stderr, TestContext.Current.CancellationToken));

        Assert.Contains("the job's container was stopped from outside while stage 'build_script' ran", error.Message);
        Assert.Contains("exit code 143 is the stop's, not the job's", error.Message);
        Assert.Equal("before the stop\nsaved on the signal\n", System.Text.Encoding.UTF8.GetString(stderr.ToArray()));
        Assert.Contains("The container gpu-executor-420-job itself is being stopped", _log.ToString());
    }

    [Fact]
    public async Task A_Terminated_line_before_any_stop_is_the_jobs_own_news_and_a_job_cannot_fake_the_servers_word()
    {
        await Prepare().RunAsync(Job(421), TestContext.Current.CancellationToken);
        _driver.RunScript = script => script.Contains("train", StringComparison.Ordinal) ? (1, "") : (0, "");
        // What a job could print: the server's word with a nonce of its own making.
        const string Fake = "\u001egpu-executor:0123456789abcdefc0ffee:15\n";
        _driver.ScriptStderr = (script, _) => script.Contains("train", StringComparison.Ordinal) ? Fake + "Terminated\n" : "";
        var stderr = new MemoryStream();

        await Assert.ThrowsAsync<BuildFailureException>(() => Run().RunAsync(Job(421), "echo train\n"u8.ToArray(), "build_script", Stream.Null, stderr, TestContext.Current.CancellationToken));

        Assert.Equal(Fake + "Terminated\n", System.Text.Encoding.UTF8.GetString(stderr.ToArray()));
        Assert.DoesNotContain("itself is being stopped", _log.ToString());
    }

    [Fact]
    public async Task Run_of_a_job_that_adopted_a_training_skips_the_stages_that_would_change_its_worktree()
    {
        LeaveTrainingOf(500, "p7-llm");
        await Prepare().RunAsync(Job(501, NamedRun), TestContext.Current.CancellationToken);
        var before = _driver.Scripts.Count;

        await Run().RunAsync(Job(501, NamedRun), "git checkout\n"u8.ToArray(), "get_sources", Stream.Null, Stream.Null, TestContext.Current.CancellationToken);

        Assert.Contains("get_sources skipped", _log.ToString());
        Assert.Equal(before, _driver.Scripts.Count);
    }
}
