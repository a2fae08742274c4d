using System.Text.RegularExpressions;

namespace GpuExecutor.IntegrationTests;

/// <summary>
/// The Docker daemon restarts under a job's main step (issue 13), on a private dockerd the test
/// stops and starts again: with live-restore `run` follows the same stage to its end and the log
/// loses nothing and repeats nothing; without it the job is a system failure that says so, and
/// the retry resumes from the newest checkpoint.
/// </summary>
public sealed class DaemonRestartTests
{
    // Once the test stops its daemon, the agents of its jobs end within 20 s: none outlives the suite.
    private static ExecutorWorkspace Workspace(PrivateDaemon daemon) =>
        ReferenceTrainer.CopyInto(new ExecutorWorkspace(dockerEndpoint: daemon.Endpoint, daemonReconnectSeconds: 90, stopGraceSeconds: 10, extraConfig: "[checkpoints]\nagent_daemon_lost_seconds = 20"));

    private static Task<Task<ExecutorWorkspace.Simulation>> StartUntilStepAsync(ExecutorWorkspace workspace, object job, int step) =>
        ReferenceTrainer.StartUntilAsync(workspace, job, ReferenceTrainer.StepLine(), step);

    [Fact]
    public async Task With_live_restore_a_daemon_restart_mid_training_does_not_fail_the_job_and_the_log_keeps_every_line_once()
    {
        await using var daemon = await PrivateDaemon.StartAsync(liveRestore: true);
        using var workspace = Workspace(daemon);

        var job = await StartUntilStepAsync(workspace, ReferenceTrainer.Job(9201, 150), step: 30);
        await daemon.StopDaemonOnlyAsync();
        // Training goes on, its output waiting in the container's pipe, while no daemon reads it.
        await Task.Delay(TimeSpan.FromSeconds(4), TestContext.Current.CancellationToken);
        await daemon.StartAgainAsync();
        var finished = await job;

        Assert.True(finished.Result.Outcome == "success", finished.Log);
        Assert.Contains("The Docker daemon does not answer", finished.Log);
        Assert.Contains("The Docker daemon answers again after", finished.Log);
        Assert.Contains("training complete at step 150", finished.Log);
        var steps = ReferenceTrainer.Numbers(ReferenceTrainer.StepLine(), finished.Log);
        // Every step once, in order: nothing lost in the gap, nothing shown twice after it.
        Assert.Equal(Enumerable.Range(steps[0], 150 - steps[0] + 1), steps);
        Assert.Single(Regex.Matches(finished.Log, "training complete"));
    }

    [Fact]
    public async Task Without_live_restore_a_daemon_restart_is_a_system_failure_that_says_so_and_the_retry_resumes_from_the_newest_checkpoint()
    {
        await using var daemon = await PrivateDaemon.StartAsync(liveRestore: false);
        using var workspace = Workspace(daemon);

        var job = await StartUntilStepAsync(workspace, ReferenceTrainer.Job(9211, 100_000), step: 30);
        await daemon.StopDaemonOnlyAsync();
        await daemon.StartAgainAsync();
        var failed = await job;

        Assert.True(failed.Result.Outcome == "system_failure", failed.Log);
        // Either the stage ended on the stop's signal while the daemon still answered, or the
        // daemon went first: a system failure that names the cause both ways.
        Assert.True(failed.Log.Contains("the job's container was stopped from outside", StringComparison.Ordinal) || failed.Log.Contains("without live-restore a daemon restart stops every container", StringComparison.Ordinal), failed.Log);
        // The daemon's stop of the container reached the trainer as SIGTERM, through the stage
        // server, and it saved: the stop's echo (bash's "Terminated") stays out of the log.
        Assert.Contains("itself is being stopped (docker stop, or a Docker daemon without live-restore shutting down)", failed.Log);
        var savedOnSignal = int.Parse(ReferenceTrainer.SavedOnSignalLine().Match(failed.Log).Groups[1].Value);
        Assert.Equal(ReferenceTrainer.Numbers(ReferenceTrainer.StepLine(), failed.Log)[^1], savedOnSignal);

        var retry = await workspace.SimulateAsync(ReferenceTrainer.Job(9212, savedOnSignal + 10));
        Assert.True(retry.Result.Outcome == "success", retry.Log);
        // Nothing lost: the step saved on the daemon's stop is where the retry starts.
        Assert.Equal(savedOnSignal, int.Parse(ReferenceTrainer.ResumedLine().Match(retry.Log).Groups[1].Value));
    }
}
