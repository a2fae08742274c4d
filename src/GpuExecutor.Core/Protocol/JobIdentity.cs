using System.Security.Cryptography;
using System.Text.Json;
using System.Text;
using GpuExecutor.Outcomes;

namespace GpuExecutor.Protocol;

/// <summary>
/// Who the job is, taken only from JOB_RESPONSE_FILE: CUSTOM_ENV_* values can be overridden by the
/// job author, the payload cannot (PROTOCOL.md, "Environment of every call").
/// </summary>
public sealed record JobIdentity(
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
    /// ref and project, so the key is built from those and never from the job id.
    /// </summary>
    public string RunKey
    {
        get
        {
            if (RunKeyOverride is { } named)
                return named;
            var material = $"{ProjectId}\n{Ref}\n{JobName}";
            var hash = SHA256.HashData(Encoding.UTF8.GetBytes(material));
            return "run-" + Convert.ToHexStringLower(hash)[..16];
        }
    }

    /// <summary>The run key a job chose with CHECKPOINT_RUN_KEY, already scoped to its project.</summary>
    public string? RunKeyOverride { get; init; }

    public static JobIdentity From(JobPayload payload) => new(
        payload.Id,
        payload.JobInfo.ProjectId,
        payload.JobInfo.ProjectFullPath,
        payload.JobInfo.PipelineId,
        payload.GitInfo.Ref,
        payload.JobInfo.Name,
        payload.RunnerInfo.Timeout > 0 ? TimeSpan.FromSeconds(payload.RunnerInfo.Timeout) : DefaultTimeout);
}
