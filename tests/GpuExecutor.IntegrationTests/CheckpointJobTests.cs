namespace GpuExecutor.IntegrationTests;

/// <summary>
/// Checkpoints end to end: the reference trainer (examples/trainer) in jobs driven by the runner
/// simulator, on the real daemon, with the built-in local store.
/// </summary>
public sealed class CheckpointJobTests
{
    private static object TrainerJob(long jobId, Dictionary<string, string> variables, int timeoutSeconds = 600) => new
    {
        job_id = jobId,
        name = "train",
        image = Testbed.TestImage,
        sources = "trainer",
        variables = new Dictionary<string, string>(variables) { ["CHECKPOINTS"] = "on" },
        script = new[] { "./trainer.sh" },
        timeout = timeoutSeconds,
    };

    private static void CopyTrainer(ExecutorWorkspace workspace) => ReferenceTrainer.CopyInto(workspace);

    private static int ResumedAt(string log) => int.Parse(ReferenceTrainer.ResumedLine().Match(log) is { Success: true } match ? match.Groups[1].Value : throw new Xunit.Sdk.XunitException($"no 'resumed at' line in:\n{log}"));

    private static int LastCheckpoint(string log) => ReferenceTrainer.CheckpointLine().Matches(log).Select(match => int.Parse(match.Groups[1].Value)).DefaultIfEmpty(-1).Last();

    [Fact]
    public async Task A_cancelled_run_resumes_in_the_next_job_from_the_checkpoint_saved_on_the_signal()
    {
        using var workspace = new ExecutorWorkspace(stopGraceSeconds: 10);
        CopyTrainer(workspace);
        var variables = new Dictionary<string, string> { ["TOTAL_STEPS"] = "100000", ["STEP_SECONDS"] = "0.1", ["CHECKPOINT_EVERY_SECONDS"] = "1" };

        var first = await workspace.SimulateAsync(TrainerJob(8101, variables), "--cancel-after", "6", "--graceful-kill-timeout", "200");
        Assert.True(first.Result.Outcome == "canceled", first.Log);
        Assert.Equal(0, ResumedAt(first.Log));
        var savedOnSignal = LastCheckpoint(first.Log);
        Assert.True(savedOnSignal > 20, $"the first job checkpointed only up to step {savedOnSignal}:\n{first.Log}");
        Assert.Contains("signalled: checkpoint saved", first.Log);

        variables["TOTAL_STEPS"] = (savedOnSignal + 5).ToString();
        var second = await workspace.SimulateAsync(TrainerJob(8102, variables));
        Assert.True(second.Result.Outcome == "success", second.Log);
        // Nothing lost: the step saved on the cancel's signal is where the next job starts.
        Assert.Equal(savedOnSignal, ResumedAt(second.Log));
        Assert.Contains("from job 8101", second.Log);
        Assert.Contains("Checkpoint restore", second.Log);
    }

    [Fact]
    public async Task The_signal_before_the_deadline_gets_a_checkpoint_committed_before_the_runner_kills_the_job()
    {
        using var workspace = new ExecutorWorkspace(stopGraceSeconds: 10, extraConfig: "[checkpoints]\ndeadline_margin_seconds = 20\nfinal_commit_wait_seconds = 30");
        CopyTrainer(workspace);
        // Checkpoints only when signalled: the deadline's signal is the only way one is saved.
        var variables = new Dictionary<string, string> { ["TOTAL_STEPS"] = "100000", ["STEP_SECONDS"] = "0.1", ["CHECKPOINT_ONLY_ON_SIGNAL"] = "1" };

        var first = await workspace.SimulateAsync(TrainerJob(8201, variables, timeoutSeconds: 60), "--graceful-kill-timeout", "60");
        var saved = LastCheckpoint(first.Log);
        Assert.True(saved > 0, $"no checkpoint on the deadline signal:\n{first.Log}");
        Assert.Contains("deadline is near", first.Log);
        Assert.Contains("is the newest in the store", first.Log);

        variables["TOTAL_STEPS"] = (saved + 3).ToString();
        var second = await workspace.SimulateAsync(TrainerJob(8202, variables));
        Assert.True(second.Result.Outcome == "success", second.Log);
        Assert.Equal(saved, ResumedAt(second.Log));
    }

    [Fact]
    public async Task A_run_that_reaches_its_deadline_is_retried_through_GitLab_and_the_retry_resumes_as_the_next_segment()
    {
        const string token = "glpat-e2e-continuation-7781";
        using var gitLab = new GpuExecutor.Tests.FakeGitLab(token) { NextJobId = 8412 };
        gitLab.AddJob(1, 8411, "train", "running");
        using var workspace = new ExecutorWorkspace(stopGraceSeconds: 10, extraConfig: $"""
            [checkpoints]
            deadline_margin_seconds = 20
            final_commit_wait_seconds = 30
            [continuation]
            gitlab_url = "{gitLab.Url}"
            token = "{token}"
            max_segments = 2
            """);
        CopyTrainer(workspace);
        var variables = new Dictionary<string, string> { ["TOTAL_STEPS"] = "100000", ["STEP_SECONDS"] = "0.1", ["CHECKPOINT_ONLY_ON_SIGNAL"] = "1" };

        // Segment 1: the deadline's signal saves a checkpoint, and the job fails so that later
        // stages do not start on an unfinished model.
        var first = await workspace.SimulateAsync(TrainerJob(8411, variables, timeoutSeconds: 30), "--graceful-kill-timeout", "60");
        Assert.True(first.Result.Outcome == "failed", first.Log);
        Assert.Contains("segment 1 of at most 2", first.Log);
        Assert.Contains("retries it through the GitLab API as segment 2", first.Log);
        var saved = LastCheckpoint(first.Log);
        Assert.True(saved > 0, $"no checkpoint on the deadline signal:\n{first.Log}");
        // GitLab still shows the job running (the runner has not reported it yet): the agent asks
        // about it again and again, and retries nothing.
        var asked = System.Diagnostics.Stopwatch.StartNew();
        while (gitLab.Requests.Count(request => request.EndsWith("/jobs/8411", StringComparison.Ordinal)) < 2 && asked.Elapsed < TimeSpan.FromSeconds(30))
            await Task.Delay(100, TestContext.Current.CancellationToken);
        Assert.True(gitLab.Requests.Count(request => request.EndsWith("/jobs/8411", StringComparison.Ordinal)) >= 2, $"the agent never polled the job: {string.Join(", ", gitLab.Requests)}");
        Assert.Empty(gitLab.Retries);
        gitLab.SetStatus(8411, "failed");
        await gitLab.WaitForRetryAsync(8411, TimeSpan.FromSeconds(30), TestContext.Current.CancellationToken);
        Assert.Equal([(8411L, 8412L)], gitLab.Retries);

        // Segment 2, the retry GitLab created: it resumes from that checkpoint, and at its own
        // deadline the chain is at its cap.
        var second = await workspace.SimulateAsync(TrainerJob(8412, variables, timeoutSeconds: 30), "--graceful-kill-timeout", "60");
        Assert.Equal(saved, ResumedAt(second.Log));
        Assert.Contains("segment 2 of at most 2, continuing job 8411", second.Log);
        Assert.Contains("the run is not continued (continuation.max_segments)", second.Log);
        var runDirectory = Directory.GetDirectories(Path.Combine(workspace.Root, "state", "checkpoints")).Single();
        var agentLog = Path.Combine(runDirectory, "agent-8412.log");
        var waited = System.Diagnostics.Stopwatch.StartNew();
        while (!(File.Exists(agentLog) && File.ReadAllText(agentLog).Contains("agent done", StringComparison.Ordinal)) && waited.Elapsed < TimeSpan.FromSeconds(60))
            await Task.Delay(200, TestContext.Current.CancellationToken);
        Assert.Contains("agent done", File.ReadAllText(agentLog));
        Assert.Single(gitLab.Retries);
        Assert.DoesNotContain(gitLab.Requests, request => request.Contains("/jobs/8412", StringComparison.Ordinal));
        Assert.Equal(0, gitLab.UnauthorizedRequests);

        var listing = await workspace.CallVerbAsync(new Dictionary<string, string?>(), "checkpoints", "list", Path.GetFileName(runDirectory));
        Assert.Contains("continuation: job 8411 was retried as job 8412, segment 2", listing.Stdout);

        foreach (var text in new[] { first.Log, second.Log, listing.Stdout }.Concat(Directory.GetFiles(runDirectory, "agent-*.log").Select(File.ReadAllText)))
            Assert.DoesNotContain(token, text);
    }

    [Fact]
    public async Task A_retried_job_adopts_the_training_its_dead_runner_left_running_instead_of_starting_it_again()
    {
        using var workspace = new ExecutorWorkspace();
        CopyTrainer(workspace);
        var variables = new Dictionary<string, string> { ["TOTAL_STEPS"] = "120", ["STEP_SECONDS"] = "0.1", ["CHECKPOINT_EVERY_SECONDS"] = "1" };
        var diedAt = await ReferenceTrainer.RunUntilTheRunnerDiesAsync(workspace, TrainerJob(8701, variables), atStep: 25);
        Assert.NotEmpty((await Testbed.JobContainersAsync(8701)).Trim());

        // GitLab fails the job and it is retried: same name, same run, a new job id.
        var retry = await workspace.SimulateAsync(TrainerJob(8702, variables));

        Assert.True(retry.Result.Outcome == "success", retry.Log);
        Assert.Contains("This job adopts it", retry.Log);
        Assert.Contains("get_sources skipped", retry.Log);
        Assert.Contains("following job 8701's build_script", retry.Log);
        // The same training went on: no restart, no restore, and it ran to the end.
        Assert.DoesNotContain("resumed at step", retry.Log);
        Assert.Contains("training complete at step 120", retry.Log);
        var followedFrom = ReferenceTrainer.StepLine().Matches(retry.Log).Select(match => int.Parse(match.Groups[1].Value)).First();
        Assert.True(followedFrom > diedAt, $"the retry's log starts at step {followedFrom}, not after step {diedAt}");
        Assert.Contains("is the newest in the store", retry.Log);
        // Its cleanup removed what the dead job left.
        Assert.Empty((await Testbed.JobContainersAsync(8701)).Trim());
        Assert.Empty((await Testbed.JobContainersAsync(8702)).Trim());

        // The next job of the run starts from the checkpoint the adopted training committed last.
        variables["TOTAL_STEPS"] = "125";
        var next = await workspace.SimulateAsync(TrainerJob(8703, variables));
        Assert.True(next.Result.Outcome == "success", next.Log);
        Assert.Equal(120, ResumedAt(next.Log));
    }

    [Fact]
    public async Task A_training_that_ended_while_no_runner_followed_it_is_a_system_failure_and_the_next_job_resumes()
    {
        using var workspace = new ExecutorWorkspace();
        CopyTrainer(workspace);
        var variables = new Dictionary<string, string> { ["TOTAL_STEPS"] = "30", ["STEP_SECONDS"] = "0.1", ["CHECKPOINT_EVERY_SECONDS"] = "1" };
        await ReferenceTrainer.RunUntilTheRunnerDiesAsync(workspace, TrainerJob(8711, variables), atStep: 5);
        // The training ends in the container with nobody attached: its exit code goes nowhere.
        // Its last line reaches the container's log, which says when.
        var ended = System.Diagnostics.Stopwatch.StartNew();
        while (!(await Testbed.DockerAsync("logs", "gpu-executor-8711-job")).Contains("training complete at step 30", StringComparison.Ordinal) && ended.Elapsed < TimeSpan.FromSeconds(60))
            await Task.Delay(200, TestContext.Current.CancellationToken);

        var retry = await workspace.SimulateAsync(TrainerJob(8712, variables));

        Assert.True(retry.Result.Outcome == "system_failure", retry.Log);
        Assert.Contains("This job adopts it", retry.Log);
        Assert.Contains("ended before it could be followed", retry.Log);
        Assert.Empty((await Testbed.JobContainersAsync(8711)).Trim());
        var next = await workspace.SimulateAsync(TrainerJob(8713, variables));
        Assert.True(next.Result.Outcome == "success", next.Log);
        Assert.Equal(30, ResumedAt(next.Log));
    }

    [Fact]
    public async Task A_job_whose_run_is_still_training_in_another_jobs_container_says_so_loudly()
    {
        using var workspace = new ExecutorWorkspace();
        CopyTrainer(workspace);
        // What a job whose runner died leaves behind: its container, still running, no cleanup.
        var orphan = "gpu-executor-test-orphan-" + Guid.NewGuid().ToString("N")[..8];
        await Testbed.DockerAsync("run", "-d", "--name", orphan, "--label", "io.gpu-executor.managed=true", "--label", "io.gpu-executor.job.id=8590",
            "--label", "io.gpu-executor.run-key=p1-twice", "--label", "io.gpu-executor.role=job", "--label", "io.gpu-executor.deadline=4102444800", Testbed.TestImage, "sleep", "300");
        try
        {
            var variables = new Dictionary<string, string> { ["CHECKPOINT_RUN_KEY"] = "twice", ["TOTAL_STEPS"] = "3", ["STEP_SECONDS"] = "0.1", ["CHECKPOINT_EVERY_SECONDS"] = "1" };

            var job = await workspace.SimulateAsync(TrainerJob(8591, variables));

            Assert.True(job.Result.Outcome == "success", job.Log);
            Assert.Contains($"WARNING: job 8590 of this run is still running in container {orphan}", job.Log);
            // A stopped container of the run is history, not a second trainer.
            await Testbed.DockerAsync("stop", "-t", "0", orphan);
            var next = await workspace.SimulateAsync(TrainerJob(8592, variables));
            Assert.DoesNotContain("is still running in container", next.Log);
        }
        finally
        {
            await Testbed.DockerAsync("rm", "-f", orphan);
        }
    }

    [Fact]
    public async Task With_the_store_down_training_goes_on_and_the_job_log_says_the_checkpoint_is_not_safe()
    {
        // Reads pass (restore finds no run), every write fails: the store went down after prepare.
        using var proxy = new CountingProxy(S3Testbed.Endpoint, putFaultFor: _ => InjectedFault.ServiceUnavailable);
        var bucket = "ckpt-down-" + Guid.NewGuid().ToString("N")[..8];
        using (var client = S3Testbed.Client())
            await S3Testbed.CreateBucketAsync(client, bucket);
        using var workspace = new ExecutorWorkspace(extraConfig: $"""
            {S3Testbed.StoreConfig("s3", proxy.Endpoint, $"\"{bucket}\"")}
            [checkpoints]
            store = "s3"
            bucket = "{bucket}"
            final_commit_wait_seconds = 20
            agent_give_up_seconds = 0
            """);
        CopyTrainer(workspace);
        var variables = new Dictionary<string, string> { ["TOTAL_STEPS"] = "150", ["STEP_SECONDS"] = "0.1", ["CHECKPOINT_EVERY_SECONDS"] = "1" };

        var job = await workspace.SimulateAsync(TrainerJob(8301, variables));
        Assert.True(job.Result.Outcome == "success", job.Log);
        Assert.Contains("training complete at step 150", job.Log);
        Assert.Contains("checkpoint commit failing since", job.Log);
        Assert.Contains("THE NEWEST CHECKPOINT IS NOT SAFE YET", job.Log);
        Assert.True(proxy.ObjectPuts > 1, "the agent never tried to commit");
    }

    [Fact]
    public async Task An_agent_killed_while_the_training_goes_on_is_started_again_and_no_checkpoint_is_lost()
    {
        using var workspace = new ExecutorWorkspace();
        CopyTrainer(workspace);
        var variables = new Dictionary<string, string> { ["TOTAL_STEPS"] = "60", ["STEP_SECONDS"] = "0.1", ["CHECKPOINT_EVERY_SECONDS"] = "1" };
        var killer = Task.Run(async () =>
        {
            // Once the agent has committed something, kill it as the host's OOM killer would.
            var status = Directory.EnumerateFiles(workspace.Root, "agent-8401.json", SearchOption.AllDirectories);
            for (var attempt = 0; attempt < 200 && !status.Any(path => File.ReadAllText(path).Contains("\"committed_generation\": 1")); attempt++)
                await Task.Delay(100, TestContext.Current.CancellationToken);
            await Testbed.RunAsync("pkill", ["-9", "-f", "checkpoints agent 8401 "], null, null);
        }, TestContext.Current.CancellationToken);

        var job = await workspace.SimulateAsync(TrainerJob(8401, variables));
        await killer;
        Assert.True(job.Result.Outcome == "success", job.Log);
        Assert.Contains("WARNING: the checkpoint agent of this run died", job.Log);
        Assert.Contains("is the newest in the store", job.Log);
        Assert.DoesNotContain("MAY NOT BE SAFE", job.Log);

        // Nothing was lost: the next job starts where the trainer ended.
        variables["TOTAL_STEPS"] = "61";
        var next = await workspace.SimulateAsync(TrainerJob(8402, variables));
        Assert.Equal(60, ResumedAt(next.Log));
    }

    [Fact]
    public async Task A_job_whose_agent_keeps_dying_ends_without_waiting_out_the_final_commit_and_says_so()
    {
        using var workspace = new ExecutorWorkspace(extraConfig: "[checkpoints]\nfinal_commit_wait_seconds = 100");
        CopyTrainer(workspace);
        var variables = new Dictionary<string, string> { ["TOTAL_STEPS"] = "60", ["STEP_SECONDS"] = "0.1", ["CHECKPOINT_EVERY_SECONDS"] = "1" };
        using var jobDone = new CancellationTokenSource();
        var killer = Task.Run(async () =>
        {
            // Every agent of the job dies as soon as it is there, as under a host's OOM killer.
            while (!jobDone.IsCancellationRequested)
            {
                await Testbed.RunAsync("pkill", ["-9", "-f", "checkpoints agent 8411 "], null, null);
                await Task.Delay(300, CancellationToken.None);
            }
        }, TestContext.Current.CancellationToken);

        var clock = System.Diagnostics.Stopwatch.StartNew();
        var job = await workspace.SimulateAsync(TrainerJob(8411, variables));
        await jobDone.CancelAsync();
        await killer;
        Assert.True(job.Result.Outcome == "success", job.Log);
        Assert.Contains("THE NEWEST CHECKPOINT MAY NOT BE SAFE", job.Log);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(60), $"the job waited {clock.Elapsed.TotalSeconds:0} s for a dead agent");
    }
}
