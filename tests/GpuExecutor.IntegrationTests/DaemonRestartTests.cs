using System.Text.RegularExpressions;

namespace GpuExecutor.IntegrationTests;

/// <summary>
/// The Docker daemon restarts under a job's main step (issue 13), on a private dockerd the test
/// stops and starts again: with live-restore `run` follows the same stage to its end and the log
/// loses nothing and repeats nothing; without it the job is a system failure that says so, and
/// the retry resumes from the newest checkpoint.
/// </summary>
public sealed partial class DaemonRestartTests
{
    private static object TrainerJob(long jobId, int totalSteps) => new
    {
        job_id = jobId,
        name = "train",
        image = Testbed.TestImage,
        sources = "trainer",
        variables = new Dictionary<string, string>
        {
            ["CHECKPOINTS"] = "on", ["TOTAL_STEPS"] = totalSteps.ToString(), ["STEP_SECONDS"] = "0.1", ["CHECKPOINT_EVERY_SECONDS"] = "1",
        },
        script = new[] { "./trainer.sh" },
        timeout = 3600,
    };

    private static ExecutorWorkspace Workspace(PrivateDaemon daemon)
    {
        // Once the test stops its daemon, the agents of its jobs end within 20 s: none outlives the suite.
        var workspace = new ExecutorWorkspace(dockerEndpoint: daemon.Endpoint, daemonReconnectSeconds: 90, stopGraceSeconds: 10, extraConfig: "[checkpoints]\nagent_daemon_lost_seconds = 20");
        var target = Directory.CreateDirectory(Path.Combine(workspace.Root, "trainer")).FullName;
        File.Copy(Path.Combine(Testbed.RepositoryRoot, "examples", "trainer", "trainer.sh"), Path.Combine(target, "trainer.sh"));
        return workspace;
    }

    /// <summary>Starts the job and returns once its trainer has printed step <paramref name="step"/>.</summary>
    private static async Task<Task<ExecutorWorkspace.Simulation>> StartUntilStepAsync(ExecutorWorkspace workspace, object job, int step)
    {
        var reached = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var simulation = workspace.SimulateAsync(job, line =>
        {
            if (StepLine().Match(line) is { Success: true } printed && int.Parse(printed.Groups[1].Value) >= step)
                reached.TrySetResult();
        }, "--graceful-kill-timeout", "30");
        await Task.WhenAny(reached.Task, simulation, Task.Delay(TimeSpan.FromSeconds(90), TestContext.Current.CancellationToken));
        Assert.True(reached.Task.IsCompleted, $"the trainer never reached step {step}");
        return simulation;
    }

    [Fact]
    public async Task With_live_restore_a_daemon_restart_mid_training_does_not_fail_the_job_and_the_log_keeps_every_line_once()
    {
        await using var daemon = await PrivateDaemon.StartAsync(liveRestore: true);
        using var workspace = Workspace(daemon);

        var job = await StartUntilStepAsync(workspace, TrainerJob(9201, 150), step: 30);
        await daemon.StopDaemonOnlyAsync();
        // Training goes on, its output waiting in the container's pipe, while no daemon reads it.
        await Task.Delay(TimeSpan.FromSeconds(4), TestContext.Current.CancellationToken);
        await daemon.StartAgainAsync();
        var finished = await job;

        Assert.True(finished.Result.Outcome == "success", finished.Log);
        Assert.Contains("The Docker daemon does not answer", finished.Log);
        Assert.Contains("The Docker daemon answers again after", finished.Log);
        Assert.Contains("training complete at step 150", finished.Log);
        var steps = StepLine().Matches(finished.Log).Select(match => int.Parse(match.Groups[1].Value)).ToList();
        // Every step once, in order: nothing lost in the gap, nothing shown twice after it.
        Assert.Equal(Enumerable.Range(steps[0], 150 - steps[0] + 1), steps);
        Assert.Single(Regex.Matches(finished.Log, "training complete"));
    }

    [Fact]
    public async Task Without_live_restore_a_daemon_restart_is_a_system_failure_that_says_so_and_the_retry_resumes_from_the_newest_checkpoint()
    {
        await using var daemon = await PrivateDaemon.StartAsync(liveRestore: false);
        using var workspace = Workspace(daemon);

        var job = await StartUntilStepAsync(workspace, TrainerJob(9211, 100_000), step: 30);
        await daemon.StopDaemonOnlyAsync();
        await daemon.StartAgainAsync();
        var failed = await job;

        Assert.True(failed.Result.Outcome == "system_failure", failed.Log);
        Assert.True(failed.Log.Contains("without live-restore a daemon restart stops every container", StringComparison.Ordinal), failed.Log);
        var saved = CheckpointLine().Matches(failed.Log).Select(match => int.Parse(match.Groups[1].Value)).ToList();

        var retry = await workspace.SimulateAsync(TrainerJob(9212, saved[^1] + 10));
        Assert.True(retry.Result.Outcome == "success", retry.Log);
        var resumedAt = int.Parse(ResumedLine().Match(retry.Log).Groups[1].Value);
        Assert.Contains(resumedAt, saved);
        Assert.True(resumedAt >= saved[Math.Max(0, saved.Count - 3)], $"resumed at {resumedAt}; the job saved {string.Join(", ", saved)}");
    }

    [GeneratedRegex(@"^step (\d+) ", RegexOptions.Multiline)]
    private static partial Regex StepLine();

    [GeneratedRegex(@"checkpoint at step (\d+)")]
    private static partial Regex CheckpointLine();

    [GeneratedRegex(@"resumed at step (\d+)")]
    private static partial Regex ResumedLine();
}
