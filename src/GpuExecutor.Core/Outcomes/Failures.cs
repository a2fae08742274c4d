namespace GpuExecutor.Outcomes;

/// <summary>
/// The job itself is at fault (its script failed, it asked for an image or a resource it may not
/// have). The runner reports it as a build failure and does not retry preparation.
/// </summary>
public sealed class BuildFailureException(string message, int scriptExitCode = 1, Exception? inner = null)
    : Exception(message, inner)
{
    /// <summary>What goes into BUILD_EXIT_CODE_FILE, so `allow_failure: exit_codes` sees the real code.</summary>
    public int ScriptExitCode { get; } = scriptExitCode;
}

/// <summary>
/// The host, the daemon or the executor's own configuration failed. Following gitlab-runner, any
/// error that is not a <see cref="BuildFailureException"/> is a system failure, so a job can never
/// forge one by what it prints or how it exits.
/// </summary>
public class SystemFailureException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>A configuration value is missing or invalid. The message names the key.</summary>
public sealed class ConfigurationException(string key, string problem)
    : SystemFailureException($"config key '{key}': {problem}")
{
    public string Key { get; } = key;
}

/// <summary>
/// A command line or job file an admin tool cannot use (the simulator's, say): not a job's
/// outcome at all, so it maps to a usage error rather than to the runner's codes.
/// </summary>
public sealed class UsageException(string message) : Exception(message);

/// <summary>
/// An admin check ran to its end and found problems (a corrupt or missing checkpoint blob, say),
/// which it has listed: not a failure to run the check, so it has an exit code of its own.
/// </summary>
public sealed class FindingsException(string message) : Exception(message);
