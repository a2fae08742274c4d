using System.Globalization;
using System.Text.RegularExpressions;
using GpuExecutor.Outcomes;
using GpuExecutor.Protocol;

namespace GpuExecutor.Checkpoints;

/// <summary>
/// What a job asks of checkpoints, from its variables (read from the trusted payload):
///   CHECKPOINTS         "on" gives the job a checkpoint directory, restore and commits
///   CHECKPOINT_RUN_KEY  names the run, instead of the default from project, ref and job name
///   CHECKPOINT_RESTORE  "latest" (default), "off", or a generation number to pin
///   CHECKPOINT_CONTINUE "on" (default) or "off": whether a job that reaches its deadline is
///                       continued through the GitLab API, where the admin configured that
/// </summary>
public sealed partial record CheckpointRequest(string RunKey, bool Restore, long? PinnedGeneration, bool Continue = true)
{
    public const string ContinueVariable = "CHECKPOINT_CONTINUE";
    public const string EnableVariable = JobIdentity.CheckpointsVariable;
    public const string RunKeyVariable = JobIdentity.RunKeyVariable;
    public const string RestoreVariable = "CHECKPOINT_RESTORE";

    /// <summary>Null when the job did not turn checkpoints on.</summary>
    public static CheckpointRequest? FromJob(IReadOnlyDictionary<string, string> variables, JobIdentity job)
    {
        switch (JobSwitch.Read(variables, EnableVariable, unset: false))
        {
            case false:
                return null;
            case null:
                throw new BuildFailureException($"{EnableVariable}='{GpuExecutor.JobLog.Printable.Of(variables[EnableVariable], 80)}' is not one of on, off (true, false, 1, 0).");
        }

        // The run key itself is the job identity's (the one place it is decided); a name it
        // could not take is refused here, before the job starts.
        var runKey = job.RunKey;
        if (variables.TryGetValue(RunKeyVariable, out var named) && named.Length > 0 && !JobIdentity.IsRunName(named))
            throw new BuildFailureException($"{RunKeyVariable}='{GpuExecutor.JobLog.Printable.Of(named, 80)}' is not a run name: use 1 to 100 letters, digits, '.', '_' and '-', starting with a letter or digit.");

        var continues = JobSwitch.Read(variables, ContinueVariable, unset: true)
            ?? throw new BuildFailureException($"{ContinueVariable}='{GpuExecutor.JobLog.Printable.Of(variables[ContinueVariable], 80)}' is not one of on, off (true, false, 1, 0).");

        var restoreText = variables.TryGetValue(RestoreVariable, out var restore) ? restore.Trim() : "";
        var request = restoreText.ToLowerInvariant() switch
        {
            "" or "latest" => new CheckpointRequest(runKey, true, null),
            "off" or "false" => new CheckpointRequest(runKey, false, null),
            _ when long.TryParse(restoreText, NumberStyles.None, CultureInfo.InvariantCulture, out var generation) && generation > 0
                => new CheckpointRequest(runKey, true, generation),
            _ => throw new BuildFailureException($"{RestoreVariable}='{GpuExecutor.JobLog.Printable.Of(restore, 80)}' is not one of latest, off, or a generation number (1 or more)."),
        };
        return request with { Continue = continues };
    }

    /// <summary>Whether <paramref name="text"/> can be a run key (a default one, or p-PROJECT-NAME): one safe path segment.</summary>
    public static bool IsRunKey(string text) => RunKeyPattern().IsMatch(text);

    [GeneratedRegex("^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
    private static partial Regex RunKeyPattern();
}
