namespace GpuExecutor.Protocol;

/// <summary>
/// The environment variable names GitLab Runner sets for a custom executor
/// (gitlab-runner executors/custom/api, see docs/runner-protocol.md).
/// </summary>
public static class RunnerVariables
{
    public const string BuildFailureExitCode = "BUILD_FAILURE_EXIT_CODE";
    public const string SystemFailureExitCode = "SYSTEM_FAILURE_EXIT_CODE";
    public const string BuildExitCodeFile = "BUILD_EXIT_CODE_FILE";
    public const string JobResponseFile = "JOB_RESPONSE_FILE";
    public const string TempDir = "TMPDIR";

    /// <summary>Every job variable reaches the executor as CUSTOM_ENV_&lt;KEY&gt;.</summary>
    public const string JobVariablePrefix = "CUSTOM_ENV_";

    /// <summary>The runner's defaults, used when a variable is missing or not a number.</summary>
    public const int DefaultBuildFailureExitCode = 1;
    public const int DefaultSystemFailureExitCode = 2;
}

/// <summary>The environment is read through this, so verbs can run in-process under tests.</summary>
public interface IRunnerEnvironment
{
    string? Get(string name);
}

public sealed class ProcessRunnerEnvironment : IRunnerEnvironment
{
    public static readonly ProcessRunnerEnvironment Instance = new();

    public string? Get(string name) => Environment.GetEnvironmentVariable(name);
}

public static class RunnerEnvironmentExtensions
{
    /// <summary>A job variable as the job set it (CUSTOM_ENV_ prefix). Untrusted: validate before use.</summary>
    public static string? GetJobVariable(this IRunnerEnvironment environment, string key) =>
        environment.Get(RunnerVariables.JobVariablePrefix + key);

    public static int GetExitCode(this IRunnerEnvironment environment, string name, int fallback) =>
        int.TryParse(environment.Get(name), out var code) ? code : fallback;
}
