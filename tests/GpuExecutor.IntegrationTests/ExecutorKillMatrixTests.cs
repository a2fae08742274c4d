using System.Globalization;

namespace GpuExecutor.IntegrationTests;

/// <summary>
/// The fault matrix's executor rows (issue 18): `kill -9` and SIGTERM of the executor's own
/// process in each stage (prepare, the job's script, after_script, cleanup; the helper's
/// stages run the same `run` verb, and are over in a few tens of milliseconds, too soon to hit),
/// from outside, as a crash or the host's service manager would. For each cell: the job's
/// outcome class, no container left once cleanup or `gc` has run, the GPU free for the next
/// job, and the run's committed generation there for the next job to resume from.
/// Its `gc` (grace 0) is `gc --job`: a plain one would remove every managed container on the
/// test bed's daemon whose deadline has passed, another test's short-timeout job included.
/// </summary>
public sealed class ExecutorKillMatrixTests
{
    private const string Gpu0 = "GPU-c0000000-0000-0000-0000-000000000000";

    private static readonly string[] Stages = ["prepare", "build_script", "after_script", "cleanup"];

    /// <param name="stage">The executor call to hit: a verb (prepare, cleanup), or a stage of `run`.</param>
    /// <param name="outcomes">The outcomes the job may end with, "|"-separated.</param>
    /// <param name="committed">Whether the run's first generation is surely committed when the executor is hit (its script finished before).</param>
    [Theory]
    [InlineData("prepare", "KILL", "success", false)]
    [InlineData("prepare", "TERM", "success", false)]
    [InlineData("build_script", "KILL", "system_failure", false)]
    [InlineData("build_script", "TERM", "failed", false)]
    [InlineData("after_script", "KILL", "success|system_failure", true)]
    [InlineData("after_script", "TERM", "success|failed", true)]
    [InlineData("cleanup", "KILL", "success", true)]
    [InlineData("cleanup", "TERM", "success", true)]
    public async Task The_executor_killed_or_terminated_in_a_stage_leaves_a_known_outcome_no_container_after_gc_the_gpu_free_and_the_run_resumable(string stage, string signal, string outcomes, bool committed)
    {
        // (extraConfig continues the workspace's [cleanup] table.) The deadline's signal comes
        // 5 s before the short timeout below, well after the job's few seconds of work.
        using var workspace = new ExecutorWorkspace(gpus: "", extraConfig: "gc_grace_seconds = 0\n[checkpoints]\ndeadline_margin_seconds = 5");
        var fake = workspace.WriteFakeNvidiaSmi($"0, {Gpu0}, NVIDIA L4, 23034, 0, 0, [N/A]\n", "\tGPU0\tCPU Affinity\tNUMA Affinity\nGPU0\t X \t0-15\t0\n");
        File.AppendAllText(workspace.ConfigPath, $"mode = \"none\"\nnvidia_smi = \"{fake}\"\ndefault_count = 1\nwait_timeout_seconds = 60\n");
        var jobId = 9900L + Array.IndexOf(Stages, stage) * 2 + (signal == "KILL" ? 0 : 1);
        // A short timeout: a container whose cleanup was killed is past its deadline soon, for gc.
        const int timeoutSeconds = 25;
        object Job(long id, params string[] script) => new
        {
            job_id = id,
            name = "train",
            image = Testbed.TestImage,
            timeout = timeoutSeconds,
            variables = new Dictionary<string, string> { ["CHECKPOINTS"] = "on", ["GPU_COUNT"] = "1" },
            script,
            after_script = new[] { "sleep 1; echo after" },
        };

        using var hitting = new CancellationTokenSource();
        var hit = HitWhenRunningAsync(workspace.ConfigPath, stage, signal, hitting.Token);
        var started = DateTimeOffset.UtcNow;
        var first = await workspace.SimulateAsync(Job(jobId, "echo generation-one > \"$CHECKPOINT_DIR/state.txt\"; sleep 2", "sleep 1"));
        await hitting.CancelAsync();
        var wasHit = await hit;

        Assert.True(wasHit, $"the {stage} call was never seen running, or ended before the signal:\n{first.Log}");
        Assert.True(outcomes.Split('|').Contains(first.Result.Outcome), $"{stage} {signal}: {first.Result.Outcome}, expected {outcomes}\n{first.Log}");

        // Whatever cleanup left (a killed cleanup leaves the container), gc removes once the deadline has passed.
        if ((await Testbed.JobContainersAsync(jobId)).Trim().Length > 0)
        {
            var wait = started.AddSeconds(timeoutSeconds + 1) - DateTimeOffset.UtcNow;
            if (wait > TimeSpan.Zero)
                await Task.Delay(wait, TestContext.Current.CancellationToken);
            var gc = await workspace.CallVerbAsync(new Dictionary<string, string?>(), "gc", "--job", jobId.ToString(CultureInfo.InvariantCulture));
            Assert.True(gc.ExitCode == 0, gc.Stdout + gc.Stderr);
        }
        Assert.Equal("", (await Testbed.JobContainersAsync(jobId)).Trim());

        // The next job of the run gets the one GPU (so nothing holds it) and resumes.
        var next = await workspace.SimulateAsync(Job(jobId + 1000, "cat \"$CHECKPOINT_DIR/state.txt\" > restored.txt 2>/dev/null || echo nothing > restored.txt"));
        Assert.True(next.Result.Outcome == "success", next.Log);
        var restored = File.ReadAllText(Path.Combine(workspace.ProjectDirOnHost(jobId + 1000), "restored.txt")).Trim();
        Assert.True(committed ? restored == "generation-one" : restored is "generation-one" or "nothing", $"{stage} {signal}: restored '{restored}'\n{next.Log}");
    }

    /// <summary>Sends SIG<paramref name="signal"/> to the executor's call for <paramref name="stage"/> the first time it is seen running; true once the signal reached it.</summary>
    private static async Task<bool> HitWhenRunningAsync(string configPath, string stage, string signal, CancellationToken cancellationToken)
    {
        while (!cancellationToken.IsCancellationRequested)
        {
            foreach (var (pid, _, call) in ExecutorProcesses.Of(configPath))
            {
                // `run SCRIPT STAGE`, or a verb of its own.
                var matches = call[0] == stage || (call[0] == "run" && call.Length > 2 && call[2] == stage);
                if (!matches)
                    continue;
                // Into the script's sleep, and past prepare's start-up; cleanup and after_script
                // are over in a few hundred milliseconds, so they are hit at once.
                await Task.Delay(stage switch { "build_script" => 1000, "prepare" => 150, _ => 0 }, CancellationToken.None);
                var (sent, _, _) = await Testbed.RunAsync("kill", [$"-{signal}", pid.ToString(CultureInfo.InvariantCulture)], null, "/");
                return sent == 0;
            }
            try
            {
                await Task.Delay(20, cancellationToken);
            }
            catch (OperationCanceledException)
            {
                break;
            }
        }
        return false;
    }
}
