using System.Collections.Concurrent;
using System.Text.RegularExpressions;

namespace GpuExecutor.IntegrationTests;

/// <summary>
/// The reference trainer (examples/trainer/trainer.sh) as the end-to-end tests drive it: the job
/// that runs it, its copy into a workspace, starting a job and waiting for a line it prints, and
/// reading its steps, checkpoints and resume points back from a log.
/// </summary>
internal static partial class ReferenceTrainer
{
    /// <summary>A job of the trainer with checkpoints on: <paramref name="totalSteps"/> steps of 0.1 s, a checkpoint every second.</summary>
    public static object Job(long jobId, int totalSteps, string? runName = null)
    {
        var variables = new Dictionary<string, string>
        {
            ["CHECKPOINTS"] = "on", ["TOTAL_STEPS"] = totalSteps.ToString(), ["STEP_SECONDS"] = "0.1", ["CHECKPOINT_EVERY_SECONDS"] = "1",
        };
        if (runName is not null)
            variables["CHECKPOINT_RUN_KEY"] = runName;
        return new { job_id = jobId, name = "train", image = Testbed.TestImage, sources = "trainer", variables, script = new[] { "./trainer.sh" }, timeout = 3600 };
    }

    /// <summary>
    /// Runs a job through the simulator until its trainer prints step <paramref name="atStep"/>,
    /// then kills the runner as a crash would: the simulator and every executor process under it
    /// get SIGKILL. The job's container and its detached checkpoint agent are not their children,
    /// and go on. Returns the step the trainer had reached.
    /// </summary>
    public static async Task<int> RunUntilTheRunnerDiesAsync(ExecutorWorkspace workspace, object job, int atStep)
    {
        var jobPath = Path.Combine(workspace.Root, $"dying-job-{Guid.NewGuid():N}.json");
        await File.WriteAllTextAsync(jobPath, System.Text.Json.JsonSerializer.Serialize(job), TestContext.Current.CancellationToken);
        var start = new System.Diagnostics.ProcessStartInfo(Testbed.Binary, ["--config", workspace.ConfigPath, "simulate", jobPath])
        {
            UseShellExecute = false,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            WorkingDirectory = workspace.Root,
        };
        var log = new System.Text.StringBuilder();
        using var runner = System.Diagnostics.Process.Start(start)!;
        runner.ErrorDataReceived += (_, line) => { lock (log) log.AppendLine(line.Data); };
        runner.BeginErrorReadLine();
        var waited = System.Diagnostics.Stopwatch.StartNew();
        try
        {
            while (waited.Elapsed < TimeSpan.FromSeconds(60) && await runner.StandardOutput.ReadLineAsync(TestContext.Current.CancellationToken) is { } line)
            {
                lock (log)
                    log.AppendLine(line);
                if (StepLine().Match(line) is { Success: true } step && int.Parse(step.Groups[1].Value) >= atStep)
                    return int.Parse(step.Groups[1].Value);
            }
            throw new Xunit.Sdk.XunitException($"the job never reached step {atStep}:\n{log}");
        }
        finally
        {
            runner.Kill(entireProcessTree: true);
            await runner.WaitForExitAsync(TestContext.Current.CancellationToken);
        }
    }

    /// <summary>Puts the trainer where the simulator's sources ("trainer") come from.</summary>
    public static ExecutorWorkspace CopyInto(ExecutorWorkspace workspace)
    {
        var target = Directory.CreateDirectory(Path.Combine(workspace.Root, "trainer")).FullName;
        File.Copy(Path.Combine(Testbed.RepositoryRoot, "examples", "trainer", "trainer.sh"), Path.Combine(target, "trainer.sh"));
        return workspace;
    }

    /// <summary>
    /// Starts the job and returns, with the job still running, once its trainer has printed a
    /// <paramref name="line"/> whose number is <paramref name="atLeast"/> or more; every log line
    /// also goes to <paramref name="lines"/> when given.
    /// </summary>
    public static async Task<Task<ExecutorWorkspace.Simulation>> StartUntilAsync(ExecutorWorkspace workspace, object job, Regex line, int atLeast, ConcurrentQueue<string>? lines = null)
    {
        var reached = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var simulation = workspace.SimulateAsync(job, printed =>
        {
            lines?.Enqueue(printed);
            if (line.Match(printed) is { Success: true } match && int.Parse(match.Groups[1].Value) >= atLeast)
                reached.TrySetResult();
        }, "--graceful-kill-timeout", "30");
        await Task.WhenAny(reached.Task, simulation, Task.Delay(TimeSpan.FromSeconds(90), TestContext.Current.CancellationToken));
        Assert.True(reached.Task.IsCompleted, $"the trainer never printed '{line}' with {atLeast} or more");
        return simulation;
    }

    /// <summary>The numbers of every match of <paramref name="line"/> in <paramref name="log"/>, in order.</summary>
    public static List<int> Numbers(Regex line, string log) => line.Matches(log).Select(match => int.Parse(match.Groups[1].Value)).ToList();

    [GeneratedRegex(@"^step (\d+) ", RegexOptions.Multiline)]
    public static partial Regex StepLine();

    [GeneratedRegex(@"checkpoint at step (\d+)")]
    public static partial Regex CheckpointLine();

    [GeneratedRegex(@"signalled: checkpoint saved at step (\d+)")]
    public static partial Regex SavedOnSignalLine();

    [GeneratedRegex(@"resumed at step (\d+)")]
    public static partial Regex ResumedLine();
}
