using System.Globalization;
using GpuExecutor.Outcomes;
using GpuExecutor.Protocol;

namespace GpuExecutor;

/// <summary>
/// The one place that turns an outcome into the runner's exit codes. Only three codes ever leave
/// a protocol verb: 0, BUILD_FAILURE_EXIT_CODE and SYSTEM_FAILURE_EXIT_CODE. Anything else (or a
/// crash) would be an "unknown failure" to the runner, so every exception ends up here.
/// </summary>
public static class ExitCodes
{
    public static int Success => 0;

    /// <summary>An admin check that ran and found problems (`checkpoints verify`): distinct from 2, a check that could not run.</summary>
    public const int FindingsExitCode = 3;

    public static int FromOutcome(Exception? error, IRunnerEnvironment environment, TextWriter log)
    {
        var buildFailure = environment.GetExitCode(RunnerVariables.BuildFailureExitCode, RunnerVariables.DefaultBuildFailureExitCode);
        var systemFailure = environment.GetExitCode(RunnerVariables.SystemFailureExitCode, RunnerVariables.DefaultSystemFailureExitCode);

        switch (error)
        {
            case null:
                return Success;
            case BuildFailureException build:
                if (build.Message.Length > 0)
                    log.WriteLine($"ERROR: {build.Message}");
                WriteBuildExitCode(environment, build.ScriptExitCode, log);
                return buildFailure;
            case FindingsException findings:
                // Only admin verbs (checkpoints verify) find things; the runner never sees this code.
                log.WriteLine($"ERROR: {findings.Message}");
                return FindingsExitCode;
            case SystemFailureException system:
                log.WriteLine($"ERROR: system failure: {system.Message}");
                return systemFailure;
            case OperationCanceledException:
                log.WriteLine("ERROR: system failure: stopped before the work was done (SIGTERM or timeout).");
                return systemFailure;
            default:
                // A bug: say so plainly, with the diagnostics an issue needs.
                log.WriteLine($"ERROR: system failure: unexpected error in gpu-executor: {error}");
                return systemFailure;
        }
    }

    /// <summary>The outcome's name in the admin log, by the same rules as <see cref="FromOutcome"/>.</summary>
    public static string OutcomeName(Exception? error) => error switch
    {
        null => "success",
        BuildFailureException => "build_failure",
        FindingsException => "findings",
        _ => "system_failure",
    };

    /// <summary>
    /// `simulate` is not a protocol verb: its exit code is the simulated job's outcome, for
    /// scripts and CI that drive it (0 success, 1 failed, 2 system failure, 3 canceled, 4 timeout).
    /// </summary>
    public static int FromSimulation(string outcome) => outcome switch
    {
        "success" => 0,
        "failed" => 1,
        "system_failure" => 2,
        "canceled" => 3,
        _ => 4,
    };

    /// <summary>The simulator could not run the job: 64 (EX_USAGE) for a bad command line or job file, else 70 (EX_SOFTWARE).</summary>
    public static int FromSimulationFailure(Exception error, TextWriter log)
    {
        if (error is UsageException usage)
        {
            log.WriteLine(usage.Message);
            return SimulationUsageError;
        }
        log.WriteLine($"ERROR: the simulator failed: {error}");
        return SimulationInternalError;
    }

    private const int SimulationUsageError = 64;
    private const int SimulationInternalError = 70;

    /// <summary>
    /// The runner reads the job's reported exit code from the first line of this file, which is
    /// what makes `allow_failure: exit_codes` work (docs/runner-protocol.md, "run").
    /// </summary>
    private static void WriteBuildExitCode(IRunnerEnvironment environment, int exitCode, TextWriter log)
    {
        var path = environment.Get(RunnerVariables.BuildExitCodeFile);
        if (string.IsNullOrEmpty(path))
            return;
        try
        {
            File.WriteAllText(path, exitCode.ToString(CultureInfo.InvariantCulture) + "\n");
        }
        catch (Exception error) when (error is IOException or UnauthorizedAccessException)
        {
            log.WriteLine($"WARNING: could not write {RunnerVariables.BuildExitCodeFile} '{path}': {error.Message}");
        }
    }
}
