using System.Text.RegularExpressions;

namespace GpuExecutor.IntegrationTests;

/// <summary>
/// End to end: the runner simulator drives the published binary against the real daemon, and
/// the tests check the outcome the runner would report and the daemon's state independently.
/// </summary>
public sealed class JobLifecycleTests
{
    [Fact]
    public async Task A_passing_job_runs_all_its_stages_in_order_in_one_job_container()
    {
        using var workspace = new ExecutorWorkspace();
        const long jobId = 7001;

        var run = await workspace.SimulateAsync(new
        {
            job_id = jobId,
            image = Testbed.TestImage,
            script = new[] { "echo \"$HOSTNAME\" > build.host", "echo trained > model.txt" },
            steps = new[] { new { name = "evaluate", script = new[] { "echo \"$HOSTNAME\" > evaluate.host", "cat model.txt" } } },
            after_script = new[] { "echo \"$HOSTNAME $CI_JOB_STATUS\" > after.host" },
        });

        Assert.Equal(0, run.ExitCode);
        Assert.Equal("success", run.Result.Outcome);
        Assert.Equal(
            ["config", "prepare", "prepare_script", "get_sources", "build_script", "step_evaluate", "after_script", "cleanup_file_variables", "cleanup"],
            run.CallNames);
        Assert.All(run.Result.Calls, call => Assert.Equal(0, call.ExitCode));

        var projectDir = workspace.ProjectDirOnHost(jobId);
        var buildHost = File.ReadAllText(Path.Combine(projectDir, "build.host")).Trim();
        Assert.Equal(buildHost, File.ReadAllText(Path.Combine(projectDir, "evaluate.host")).Trim());
        Assert.Equal($"{buildHost} success", File.ReadAllText(Path.Combine(projectDir, "after.host")).Trim());
        Assert.Contains("trained", run.Log);
        Assert.Equal("", await Testbed.JobContainersAsync(jobId));
    }

    [Fact]
    public async Task Runner_stages_run_in_the_helper_container_and_user_steps_in_the_job_container()
    {
        using var workspace = new ExecutorWorkspace();
        const long jobId = 7002;

        var run = await workspace.SimulateAsync(new
        {
            job_id = jobId,
            image = Testbed.TestImage,
            sources = ".",
            script = new[] { "echo \"$HOSTNAME\" > build.host", "ls" },
        });

        Assert.Equal("success", run.Result.Outcome);
        var helperId = Regex.Match(run.Log, @"gpu-executor-7002-helper \(([0-9a-f]{12})\)").Groups[1].Value;
        var jobContainerId = Regex.Match(run.Log, @"gpu-executor-7002-job \(([0-9a-f]{12})\)").Groups[1].Value;
        Assert.NotEqual("", helperId);
        Assert.NotEqual("", jobContainerId);
        // get_sources ran in the helper and wrote the sources (this test's workspace, which holds
        // config.toml) through the shared builds mount; the user step, in the job container, sees them.
        Assert.Contains($"Fetching changes (simulated) in {helperId}", run.Log);
        var projectDir = workspace.ProjectDirOnHost(jobId);
        Assert.Equal(jobContainerId, File.ReadAllText(Path.Combine(projectDir, "build.host")).Trim());
        Assert.True(File.Exists(Path.Combine(projectDir, "config.toml")), run.Log);
    }

    [Fact]
    public async Task A_step_that_exits_42_is_a_build_failure_with_exit_code_42_and_after_script_sees_failed()
    {
        using var workspace = new ExecutorWorkspace();
        const long jobId = 7003;

        var run = await workspace.SimulateAsync(new
        {
            job_id = jobId,
            image = Testbed.TestImage,
            script = new[] { "echo before", "exit 42", "echo never-printed" },
            steps = new[] { new { name = "skipped", script = new[] { "touch skipped.marker" } } },
            after_script = new[] { "echo \"$CI_JOB_STATUS\" > after.status" },
        });

        Assert.Equal(1, run.ExitCode);
        Assert.Equal("failed", run.Result.Outcome);
        Assert.Equal(42, run.Result.ExitCode);
        Assert.Contains("ERROR: Job failed: exit code 42", run.Log);
        Assert.Equal(1, run.Call("build_script").ExitCode);
        Assert.DoesNotContain("step_skipped", run.CallNames);
        Assert.DoesNotContain("never-printed", run.Log);
        Assert.Equal("failed", File.ReadAllText(Path.Combine(workspace.ProjectDirOnHost(jobId), "after.status")).Trim());
    }

    [Fact]
    public async Task A_cancel_during_a_sleeping_child_leaves_no_process_and_cleanup_removes_the_container()
    {
        using var workspace = new ExecutorWorkspace();
        const long jobId = 7004;

        var run = await workspace.SimulateAsync(new
        {
            job_id = jobId,
            image = Testbed.TestImage,
            script = new[] { "bash -c 'sleep 1000' &", "touch started.marker", "wait" },
            after_script = new[]
            {
                "echo \"$CI_JOB_STATUS\" > after.status",
                // Every process of the container, as after_script sees it right after the cancel.
                "for status in /proc/[0-9]*/status; do read -r _ name < \"$status\" && echo \"$name\"; done > processes.txt",
            },
        }, "--cancel-after", "2", "--graceful-kill-timeout", "30");

        Assert.Equal(3, run.ExitCode);
        Assert.Equal("canceled", run.Result.Outcome);
        Assert.Equal("cancel", run.Call("build_script").Signalled);
        var projectDir = workspace.ProjectDirOnHost(jobId);
        Assert.True(File.Exists(Path.Combine(projectDir, "started.marker")), "the step never started:\n" + run.Log);
        Assert.Equal("canceled", File.ReadAllText(Path.Combine(projectDir, "after.status")).Trim());
        var processes = File.ReadAllLines(Path.Combine(projectDir, "processes.txt"));
        Assert.DoesNotContain("sleep", processes);
        Assert.Contains("bash", processes);
        Assert.Equal("cleanup", run.CallNames[^1]);
        Assert.Equal("", await Testbed.JobContainersAsync(jobId));
    }

    [Fact]
    public async Task The_job_timeout_stops_the_stage_runs_no_further_stages_and_still_cleans_up()
    {
        using var workspace = new ExecutorWorkspace();
        const long jobId = 7005;

        var run = await workspace.SimulateAsync(new
        {
            job_id = jobId,
            image = Testbed.TestImage,
            timeout = 4,
            script = new[] { "sleep 1000" },
            after_script = new[] { "touch after.marker" },
        });

        Assert.Equal(4, run.ExitCode);
        Assert.Equal("timeout", run.Result.Outcome);
        Assert.Contains("execution took longer than 4 seconds", run.Log);
        Assert.Equal("timeout", run.Call("build_script").Signalled);
        Assert.DoesNotContain("after_script", run.CallNames);
        Assert.DoesNotContain("cleanup_file_variables", run.CallNames);
        Assert.Equal("cleanup", run.CallNames[^1]);
        Assert.False(File.Exists(Path.Combine(workspace.ProjectDirOnHost(jobId), "after.marker")));
        Assert.Equal("", await Testbed.JobContainersAsync(jobId));
    }

    [Fact]
    public async Task With_the_daemon_stopped_prepare_is_a_system_failure_retried_three_times_with_cleanup_between()
    {
        // A daemon that is stopped leaves no socket; this endpoint is one nobody listens on.
        var deadSocket = Path.Combine(Path.GetTempPath(), $"stopped-dockerd-{Guid.NewGuid():N}.sock");
        using var workspace = new ExecutorWorkspace(dockerEndpoint: "unix://" + deadSocket);

        var run = await workspace.SimulateAsync(new { image = Testbed.TestImage, script = new[] { "true" } });

        Assert.Equal(2, run.ExitCode);
        Assert.Equal("system_failure", run.Result.Outcome);
        Assert.Equal(3, run.Result.PrepareAttempts);
        Assert.Equal(3, run.Result.CleanupCalls);
        Assert.Equal(
            ["config", "prepare", "cleanup", "config", "prepare", "cleanup", "config", "prepare", "cleanup"],
            run.CallNames);
        Assert.All(run.Result.Calls.Where(call => call.Name == "prepare"), call => Assert.Equal(2, call.ExitCode));
        Assert.Contains($"the Docker daemon at unix://{deadSocket} cannot be reached", run.Log);
    }

    [Fact]
    public async Task An_image_the_allowlist_refuses_is_a_build_failure_naming_the_image_and_the_rule()
    {
        using var workspace = new ExecutorWorkspace(allowed: "\"gpu-executor-test/*\", \"nvcr.io/nvidia/**\"");

        var run = await workspace.SimulateAsync(new { image = "docker.io/someone/miner:latest", script = new[] { "true" } });

        Assert.Equal(1, run.ExitCode);
        Assert.Equal("failed", run.Result.Outcome);
        Assert.Equal(1, run.Result.PrepareAttempts);
        Assert.Equal(1, run.Call("prepare").ExitCode);
        Assert.Contains("image 'docker.io/someone/miner:latest' is not allowed", run.Log);
        Assert.Contains("images.allowed [\"gpu-executor-test/*\", \"nvcr.io/nvidia/**\"]", run.Log);
        Assert.DoesNotContain("build_script", run.CallNames);
    }

    [Fact]
    public async Task Three_jobs_at_once_keep_to_their_own_containers_and_builds_directories()
    {
        using var workspace = new ExecutorWorkspace();
        long[] jobIds = [7101, 7102, 7103];

        var runs = await Task.WhenAll(jobIds.Select(jobId => workspace.SimulateAsync(new
        {
            job_id = jobId,
            image = Testbed.TestImage,
            script = new[]
            {
                $"echo {jobId} > mine.txt",
                "sleep 2",
                // Each job must see only its own file, and its own container.
                "ls /builds/ml/demo > seen.txt",
                "echo \"$HOSTNAME\" > host.txt",
                $"test \"$(cat mine.txt)\" = {jobId}",
            },
        })));

        Assert.All(runs, run => Assert.Equal("success", run.Result.Outcome));
        var hosts = new HashSet<string>();
        foreach (var jobId in jobIds)
        {
            var projectDir = workspace.ProjectDirOnHost(jobId);
            Assert.Equal(jobId.ToString(), File.ReadAllText(Path.Combine(projectDir, "mine.txt")).Trim());
            Assert.Equal(["mine.txt", "seen.txt"], File.ReadAllLines(Path.Combine(projectDir, "seen.txt")));
            hosts.Add(File.ReadAllText(Path.Combine(projectDir, "host.txt")).Trim());
        }
        Assert.Equal(3, hosts.Count);
    }

    [Fact]
    public async Task An_image_without_bash_is_a_build_failure_that_says_bash_is_needed()
    {
        var image = Environment.GetEnvironmentVariable("GPU_EXECUTOR_TEST_IMAGE_WITHOUT_BASH") ?? "gpu-executor-test/busybox:1";
        using var workspace = new ExecutorWorkspace();
        const long jobId = 7006;

        var run = await workspace.SimulateAsync(new { job_id = jobId, image, script = new[] { "true" } });

        Assert.Equal("failed", run.Result.Outcome);
        Assert.Equal(1, run.Result.PrepareAttempts);
        Assert.Contains($"image '{image}' has no 'bash' on its PATH", run.Log);
        Assert.Equal("", await Testbed.JobContainersAsync(jobId));
    }

    [Fact]
    public async Task On_timeout_cleanup_waits_for_run_to_end_its_stop_sequence_before_it_removes_the_container()
    {
        // The executor's grace (8 s) outlasts the runner's wait before cleanup (2 s), as the
        // runner allows: cleanup is called while run is still stopping the stage, and must not
        // remove the container under it before the stop sequence has ended.
        using var workspace = new ExecutorWorkspace(stopGraceSeconds: 8);
        const long jobId = 7007;

        var run = await workspace.SimulateAsync(new
        {
            job_id = jobId,
            image = Testbed.TestImage,
            timeout = 3,
            script = new[] { "trap '' TERM", "while :; do sleep 1; done" },
        }, "--timeout-cleanup-wait", "2", "--graceful-kill-timeout", "60");

        Assert.Equal("timeout", run.Result.Outcome);
        Assert.Equal("timeout", run.Call("build_script").Signalled);
        Assert.Equal(["build_script", "cleanup"], run.CallNames.TakeLast(2));
        Assert.Equal(0, run.Call("cleanup").ExitCode);
        Assert.Equal("", await Testbed.JobContainersAsync(jobId));
        var killed = run.Log.IndexOf("still running after 8 s: sending SIGKILL", StringComparison.Ordinal);
        var removed = run.Log.IndexOf($"Removed gpu-executor-{jobId}-job", StringComparison.Ordinal);
        Assert.True(killed >= 0 && removed > killed, $"cleanup removed the container before run's stop sequence ended:\n{run.Log}");

        // The abandoned run must end by itself, not linger.
        var deadline = DateTime.UtcNow.AddSeconds(15);
        while (RunProcessesOf(workspace.ConfigPath).Any() && DateTime.UtcNow < deadline)
            await Task.Delay(200, TestContext.Current.CancellationToken);
        Assert.Empty(RunProcessesOf(workspace.ConfigPath));
    }

    private static IEnumerable<int> RunProcessesOf(string configPath)
    {
        foreach (var directory in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(directory), out var pid))
                continue;
            string commandLine;
            try
            {
                commandLine = File.ReadAllText(Path.Combine(directory, "cmdline")).Replace('\0', ' ');
            }
            catch (IOException)
            {
                continue;
            }
            if (commandLine.Contains(configPath, StringComparison.Ordinal) && commandLine.Contains(" run ", StringComparison.Ordinal))
                yield return pid;
        }
    }

    [Fact]
    public async Task A_cancel_lets_a_trainer_finish_its_checkpoint_and_ends_as_soon_as_it_has()
    {
        using var workspace = new ExecutorWorkspace(stopGraceSeconds: 30);
        const long jobId = 7008;

        var run = await workspace.SimulateAsync(new
        {
            job_id = jobId,
            image = Testbed.TestImage,
            script = new[]
            {
                // A trainer that needs two seconds after SIGTERM to write its checkpoint, while
                // the runner's own script shell exits on TERM at once.
                "bash -c 'trap \"sleep 2; echo saved > checkpoint.txt; exit 143\" TERM; touch started.marker; while :; do sleep 0.1; done'",
            },
            after_script = new[] { "cat checkpoint.txt" },
        }, "--cancel-after", "2", "--graceful-kill-timeout", "60");

        Assert.Equal("canceled", run.Result.Outcome);
        var projectDir = workspace.ProjectDirOnHost(jobId);
        Assert.True(File.Exists(Path.Combine(projectDir, "started.marker")), run.Log);
        Assert.Equal("saved", File.ReadAllText(Path.Combine(projectDir, "checkpoint.txt")).Trim());
        Assert.DoesNotContain("sending SIGKILL", run.Log);
        // Cancelled after 2 s, 2 s to checkpoint: far less than the 30 s grace.
        Assert.InRange(run.Call("build_script").Seconds, 3, 15);
    }
}
