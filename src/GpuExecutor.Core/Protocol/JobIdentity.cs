using System.Security.Cryptography;
using System.Text.Json;
using System.Text;
using GpuExecutor.Outcomes;

namespace GpuExecutor.Protocol;

/// <summary>
/// Who the job is, taken only from JOB_RESPONSE_FILE: CUSTOM_ENV_* values can be overridden by the
/// job author, the payload cannot (docs/runner-protocol.md).
/// </summary>
public sealed partial record JobIdentity(
    long JobId,
    long ProjectId,
    string ProjectPath,
    long PipelineId,
    string Ref,
    string JobName,
    TimeSpan Timeout)
{
    /// <summary>The runner falls back to 7200 s when runner_info.timeout is not positive.</summary>
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(7200);

    /// <summary>
    /// Names a training run across retries: a retried job gets a new job id but keeps its name,
    /// ref and project, so the key is built from those and never from the job id; or the run a
    /// job with checkpoints named in CHECKPOINT_RUN_KEY, scoped to its project. Decided here once,
    /// from the payload: labels, the agent, run, gc and re-attach take it from here or from the
    /// container's labels.
    /// </summary>
    public string RunKey { get; init; } = "";

    public const string CheckpointsVariable = "CHECKPOINTS";
    public const string RunKeyVariable = "CHECKPOINT_RUN_KEY";

    public static JobIdentity From(JobPayload payload)
    {
        var job = new JobIdentity(
            payload.Id,
            payload.JobInfo.ProjectId,
            payload.JobInfo.ProjectFullPath,
            payload.JobInfo.PipelineId,
            payload.GitInfo.Ref,
            payload.JobInfo.Name,
            payload.RunnerInfo.Timeout > 0 ? TimeSpan.FromSeconds(payload.RunnerInfo.Timeout) : DefaultTimeout);
        return job with { RunKey = ChosenRunKey(payload.VariableMap(), job.ProjectId) ?? DefaultRunKey(job) };
    }

    private static string DefaultRunKey(JobIdentity job)
    {
        var material = $"{job.ProjectId}\n{job.Ref}\n{job.JobName}";
        var hash = SHA256.HashData(Encoding.UTF8.GetBytes(material));
        return "run-" + Convert.ToHexStringLower(hash)[..16];
    }

    /// <summary>
    /// The run a job with checkpoints on named, scoped to its project: another project's job
    /// cannot name, read or overwrite it. Null when the job named none, or one that is not a run
    /// name: prepare then refuses the job (Checkpoints.CheckpointRequest says why), and cleanup,
    /// which must always work, still finds the job's containers by job id.
    /// </summary>
    private static string? ChosenRunKey(IReadOnlyDictionary<string, string> variables, long projectId)
    {
        return JobSwitch.Read(variables, CheckpointsVariable, unset: false) == true && variables.TryGetValue(RunKeyVariable, out var named) && IsRunName(named)
            ? $"p{projectId.ToString(System.Globalization.CultureInfo.InvariantCulture)}-{named}"
            : null;
    }

    /// <summary>A run name a job may choose: 1 to 100 letters, digits, '.', '_' and '-', starting with a letter or digit.</summary>
    public static bool IsRunName(string text) => RunNamePattern().IsMatch(text);

    [System.Text.RegularExpressions.GeneratedRegex("^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")]
    private static partial System.Text.RegularExpressions.Regex RunNamePattern();
}
