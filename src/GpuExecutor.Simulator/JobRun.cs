using System.Diagnostics;
using GpuExecutor.Protocol;

namespace GpuExecutor.Simulation;

/// <summary>One stage the simulator will ask the executor to run.</summary>
public sealed record PlannedStage(string Name, IReadOnlyList<string> BodyLines);

/// <summary>The stages a job needs, in the runner's order. A stage with nothing to do is not called.</summary>
public sealed class StagePlan
{
    public StagePlan(SimulatedJob job, string jobDirectory)
    {
        PrepareScript = new PlannedStage("prepare_script",
            ["echo \"Running on ${HOSTNAME:-the job container}...\""]);
        var sources = job.Sources is null ? null : Path.Combine(jobDirectory, job.Sources);
        GetSources = new PlannedStage("get_sources", RunnerScriptBuilder.PlaceSources(sources).ToList());

        var steps = new List<PlannedStage>();
        if (job.Script.Count > 0)
            // The runner renames the main step, step_script, to build_script (docs/runner-protocol.md).
            steps.Add(new PlannedStage("build_script", RunnerScriptBuilder.UserCommands(job.Script).ToList()));
        steps.AddRange(job.Steps.Select(step => new PlannedStage("step_" + step.Name, RunnerScriptBuilder.UserCommands(step.Script).ToList())));
        UserSteps = steps;

        AfterScript = job.AfterScript.Count > 0
            ? new PlannedStage("after_script", RunnerScriptBuilder.UserCommands(job.AfterScript).ToList())
            : null;
        CleanupFileVariables = new PlannedStage("cleanup_file_variables", [": no file variables to remove"]);
    }

    public PlannedStage PrepareScript { get; }
    public PlannedStage GetSources { get; }
    public IReadOnlyList<PlannedStage> UserSteps { get; }
    public PlannedStage? AfterScript { get; }
    public PlannedStage CleanupFileVariables { get; }
}

internal sealed record JobOutcome(string Status, int ExitCode = 0, string Message = "");

/// <summary>The run phase of one job: stage order, skip rules, cancel and timeout.</summary>
internal sealed class JobRun(
    RunnerSimulator simulator,
    string temp,
    IReadOnlyDictionary<string, string> runEnvironment,
    Dictionary<string, string> variables,
    string projectDir,
    string exitCodeFile,
    Stopwatch jobClock,
    TimeSpan jobTimeout,
    TimeSpan? cancelAfter,
    CancellationToken externalCancel,
    Func<Task>? afterSources = null)
{
    private enum StageStatus { Success, BuildFailure, SystemFailure, Canceled, TimedOut }

    private readonly CancellationTokenSource _cancel = CancellationTokenSource.CreateLinkedTokenSource(externalCancel);
    private readonly CancellationTokenSource _timeout = new();

    public async Task<JobOutcome> ExecuteAsync(StagePlan plan)
    {
        // Timers take at most int.MaxValue ms (24.8 days); GitLab allows timeouts up to a month.
        var remaining = jobTimeout - jobClock.Elapsed;
        _timeout.CancelAfter(TimeSpan.FromMilliseconds(Math.Clamp(remaining.TotalMilliseconds, 0, int.MaxValue - 1)));

        var (status, exitCode) = await RunStageAsync(plan.PrepareScript, userStep: false, "running");
        if (status != StageStatus.Success)
            // If prepare_script fails, nothing more runs (docs/runner-protocol.md, "After a failure").
            return Outcome(status, exitCode);

        (status, exitCode) = await RunStageAsync(plan.GetSources, userStep: false, "running");
        if (status == StageStatus.TimedOut)
            return Outcome(status, exitCode);

        if (status == StageStatus.Success)
        {
            if (afterSources is not null)
                await afterSources();
            if (cancelAfter is { } delay)
                _cancel.CancelAfter(delay);
            foreach (var step in plan.UserSteps)
            {
                if (_cancel.IsCancellationRequested)
                {
                    status = StageStatus.Canceled;
                    break;
                }
                (status, exitCode) = await RunStageAsync(step, userStep: true, "running");
                if (status != StageStatus.Success)
                    break;
            }
        }
        if (_cancel.IsCancellationRequested && status == StageStatus.Success)
            status = StageStatus.Canceled;
        // A job timeout stops everything: no after_script, no further stages.
        if (status == StageStatus.TimedOut)
            return Outcome(status, exitCode);

        if (plan.AfterScript is not null)
        {
            var jobStatus = status switch
            {
                StageStatus.Success => "success",
                StageStatus.Canceled => "canceled",
                _ => "failed",
            };
            // after_script's own result never changes the job's status.
            var (afterStatus, _) = await RunStageAsync(plan.AfterScript, userStep: false, jobStatus);
            if (afterStatus == StageStatus.TimedOut)
                return Outcome(afterStatus, 0);
        }

        var (cleanupStatus, _) = await RunStageAsync(plan.CleanupFileVariables, userStep: false, "running");
        if (cleanupStatus == StageStatus.TimedOut)
            return Outcome(cleanupStatus, 0);
        return Outcome(status, exitCode);
    }

    private static JobOutcome Outcome(StageStatus status, int exitCode) => status switch
    {
        StageStatus.Success => new JobOutcome("success"),
        StageStatus.BuildFailure => new JobOutcome("failed", exitCode),
        StageStatus.Canceled => new JobOutcome("canceled"),
        StageStatus.TimedOut => new JobOutcome("timeout"),
        _ => new JobOutcome("system_failure", Message: $"the executor's run call exited with {exitCode}"),
    };

    private async Task<(StageStatus Status, int ExitCode)> RunStageAsync(PlannedStage stage, bool userStep, string jobStatus)
    {
        if (_timeout.IsCancellationRequested)
            return (StageStatus.TimedOut, 0);

        var scriptVariables = new Dictionary<string, string>(variables) { ["CI_JOB_STATUS"] = jobStatus };
        var scriptDirectory = Directory.CreateDirectory(Path.Combine(temp, "script" + Random.Shared.Next(100_000_000, 999_999_999)));
        var scriptPath = Path.Combine(scriptDirectory.FullName, "script");
        await File.WriteAllTextAsync(scriptPath, RunnerScriptBuilder.Build(scriptVariables, projectDir, stage.BodyLines));
        File.SetUnixFileMode(scriptPath, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        File.Delete(exitCodeFile);

        var environment = RunnerSimulator.Merge(runEnvironment, RunnerSimulator.Custom(scriptVariables));
        var call = await simulator.CallAsync(
            stage.Name,
            ["run", scriptPath, stage.Name],
            temp,
            environment,
            stop: userStep ? _cancel.Token : CancellationToken.None,
            timeout: _timeout.Token);
        scriptDirectory.Delete(recursive: true);

        var buildExitCode = ReadBuildExitCode();
        if (call.Signalled == "timeout")
            return (StageStatus.TimedOut, 0);
        if (call.Signalled == "cancel")
            return (StageStatus.Canceled, 0);
        return call.ExitCode switch
        {
            0 => (StageStatus.Success, 0),
            1 => (StageStatus.BuildFailure, buildExitCode ?? 1),
            _ => (StageStatus.SystemFailure, call.ExitCode),
        };
    }

    private int? ReadBuildExitCode()
    {
        if (!File.Exists(exitCodeFile))
            return null;
        var firstLine = File.ReadLines(exitCodeFile).FirstOrDefault();
        return int.TryParse(firstLine?.Trim(), out var code) ? code : null;
    }
}
