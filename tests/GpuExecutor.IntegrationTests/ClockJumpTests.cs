using System.Globalization;

namespace GpuExecutor.IntegrationTests;

/// <summary>
/// The fault matrix's clock rows (issue 18): the host's wall clock jumps, forward or back, while
/// a job runs (an NTP step after a long drift, an admin's `date -s`, a VM resumed). The executor's
/// processes get a wall clock of the test's own through libfaketime, moved by writing an offset
/// into a file they re-read each second; their monotonic clock stays the real one, as on a real
/// host, and so do Docker's, the store's and the test's clocks.
/// What must hold: a grace or wait that one process measures does not stretch or shrink with the
/// jump, and the job's deadline, which several processes share through its container's labels,
/// stays where it was (it is kept on the host's boot clock too).
/// </summary>
public sealed class ClockJumpTests
{
    private const string LibFaketime = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

    /// <summary>Two hours: past a job's 600 s timeout plus cleanup.gc_grace_seconds' default hour.</summary>
    private static readonly TimeSpan Jump = TimeSpan.FromHours(2);

    /// <summary>The executor's wall clock, shifted from the real one by what the offset file says.</summary>
    private sealed class ShiftedWallClock
    {
        private readonly string _offsetFile;

        public ShiftedWallClock(ExecutorWorkspace workspace)
        {
            if (!File.Exists(LibFaketime))
                Testbed.Missing($"libfaketime ({LibFaketime}; scripts/testbed.sh installs the Debian package libfaketime)");
            _offsetFile = Path.Combine(workspace.Root, "wall-clock-offset");
            Shift(TimeSpan.Zero);
            workspace.ExecutorEnvironment["LD_PRELOAD"] = LibFaketime;
            workspace.ExecutorEnvironment["FAKETIME_TIMESTAMP_FILE"] = _offsetFile;
            // Re-read at most once a second: the processes see a jump within a second of it.
            workspace.ExecutorEnvironment["FAKETIME_CACHE_DURATION"] = "1";
            // A jump of the wall clock leaves the monotonic clock and files' times alone.
            workspace.ExecutorEnvironment["FAKETIME_DONT_FAKE_MONOTONIC"] = "1";
            workspace.ExecutorEnvironment["NO_FAKE_STAT"] = "1";
        }

        public void Shift(TimeSpan offset) =>
            File.WriteAllText(_offsetFile, (offset >= TimeSpan.Zero ? "+" : "-") + Math.Abs((long)offset.TotalSeconds).ToString(CultureInfo.InvariantCulture) + "\n");
    }

    [Fact]
    public async Task A_forward_jump_mid_training_ends_neither_the_agent_nor_the_run_and_the_last_checkpoint_is_committed()
    {
        using var workspace = new ExecutorWorkspace();
        var clock = new ShiftedWallClock(workspace);
        const long jobId = 9301;
        object Job(long id, params string[] script) => new
        {
            job_id = id,
            name = "train",
            image = Testbed.TestImage,
            timeout = 600,
            variables = new Dictionary<string, string> { ["CHECKPOINTS"] = "on" },
            script,
        };

        // The jump comes while the training runs, after its first checkpoint and before its last:
        // with the deadline on the wall clock, the agent would see the job's deadline plus gc's
        // grace long past and end before the last one.
        var jumped = false;
        var first = await workspace.SimulateAsync(
            Job(jobId, "echo one > \"$CHECKPOINT_DIR/state.txt\"; echo jump-now; sleep 5; echo two > \"$CHECKPOINT_DIR/state.txt\"; sleep 1"),
            line =>
            {
                if (line == "jump-now")
                {
                    clock.Shift(Jump);
                    jumped = true;
                }
            });

        Assert.True(jumped, $"the script never said jump-now:\n{first.Log}");
        Assert.True(first.Result.Outcome == "success", first.Log);
        Assert.Equal("", (await Testbed.JobContainersAsync(jobId)).Trim());
        var agentLogs = Directory.EnumerateFiles(Path.Combine(workspace.Root, "state"), "agent*.log", SearchOption.AllDirectories).Select(File.ReadAllText).ToList();
        Assert.NotEmpty(agentLogs);
        Assert.DoesNotContain(agentLogs, text => text.Contains("deadline plus cleanup.gc_grace_seconds passed", StringComparison.Ordinal));

        // Back on the real clock, the run's next job resumes from the last checkpoint.
        clock.Shift(TimeSpan.Zero);
        var next = await workspace.SimulateAsync(Job(jobId + 1, "cat \"$CHECKPOINT_DIR/state.txt\" > restored.txt"));
        Assert.True(next.Result.Outcome == "success", next.Log);
        Assert.Equal("two", File.ReadAllText(Path.Combine(workspace.ProjectDirOnHost(jobId + 1), "restored.txt")).Trim());
    }

    [Fact]
    public async Task A_backward_jump_during_a_stops_grace_does_not_stretch_it()
    {
        // The executor's grace (6 s) outlasts the runner's wait before cleanup (2 s): run's stop
        // sequence is still waiting when the clock goes back two hours. Measured on the wall
        // clock, its SIGKILL would come two hours later, and cleanup would remove the container
        // under it after its own wait.
        using var workspace = new ExecutorWorkspace(stopGraceSeconds: 6);
        var clock = new ShiftedWallClock(workspace);
        const long jobId = 9302;
        DateTime? stopSeen = null;

        var run = await workspace.SimulateAsync(new
        {
            job_id = jobId,
            image = Testbed.TestImage,
            timeout = 4,
            script = new[] { "trap '' TERM", "while :; do sleep 1; done" },
        }, line =>
        {
            if (line.StartsWith("Stop requested", StringComparison.Ordinal))
            {
                stopSeen = DateTime.UtcNow;
                clock.Shift(-Jump);
            }
        }, "--timeout-cleanup-wait", "2", "--graceful-kill-timeout", "60");

        Assert.True(stopSeen is not null, $"the stop was never seen, so the clock never jumped:\n{run.Log}");
        Assert.Equal("timeout", run.Result.Outcome);
        var killed = run.Log.IndexOf("still running after 6 s: sending SIGKILL", StringComparison.Ordinal);
        var removed = run.Log.IndexOf($"Removed gpu-executor-{jobId}-job", StringComparison.Ordinal);
        Assert.True(killed >= 0 && removed > killed, $"the stop's grace did not end in SIGKILL before cleanup removed the container:\n{run.Log}");
        Assert.True(DateTime.UtcNow - stopSeen < TimeSpan.FromSeconds(60), $"the job took {(DateTime.UtcNow - stopSeen.Value).TotalSeconds:0} s after the stop began\n{run.Log}");
        Assert.Equal("", await Testbed.JobContainersAsync(jobId));
    }

    [Fact]
    public async Task Gc_after_a_forward_jump_keeps_a_prepared_job_whose_deadline_has_not_come_and_cleanup_removes_it()
    {
        using var workspace = new ExecutorWorkspace();
        var clock = new ShiftedWallClock(workspace);
        const long jobId = 9303;
        var environment = workspace.RunnerEnvironment(workspace.WritePayload(jobId));
        Assert.Equal(0, (await workspace.CallVerbAsync(environment, "prepare")).ExitCode);
        try
        {
            var bootId = File.ReadAllText("/proc/sys/kernel/random/boot_id").Trim();
            var label = await Testbed.DockerAsync("inspect", "--format", "{{index .Config.Labels \"io.gpu-executor.deadline.boot\"}}", $"gpu-executor-{jobId}-job");
            Assert.StartsWith(bootId + "@", label.Trim());

            // Between the job's calls (no `run` holds it), the wall clock says the job's
            // 600 s timeout and gc's hour of grace are long over; the host's boot clock does not.
            // (--job: other tests' containers are not this test's to judge.)
            clock.Shift(Jump);
            var gc = await workspace.CallVerbAsync(new Dictionary<string, string?>(), "gc", "--job", jobId.ToString(CultureInfo.InvariantCulture));

            Assert.True(gc.ExitCode == 0, gc.Stdout + gc.Stderr);
            Assert.DoesNotContain("removed container", gc.Stdout);
            Assert.NotEqual("", (await Testbed.JobContainersAsync(jobId)).Trim());
        }
        finally
        {
            Assert.Equal(0, (await workspace.CallVerbAsync(environment, "cleanup")).ExitCode);
        }
        Assert.Equal("", await Testbed.JobContainersAsync(jobId));
    }
}
