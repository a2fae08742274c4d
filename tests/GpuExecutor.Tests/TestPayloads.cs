using System.Text.Json;
using GpuExecutor.Protocol;

namespace GpuExecutor.Tests;

/// <summary>Job payloads as the runner writes response.json, for tests that need a job's identity.</summary>
public static class TestPayloads
{
    public static JobPayload Payload(long jobId, long projectId, IReadOnlyDictionary<string, string> variables, long pipelineId = 3, string gitRef = "main", string name = "train", int timeoutSeconds = 3600, string? image = null, string repoUrl = "")
    {
        var json = JsonSerializer.Serialize(new Dictionary<string, object?>
        {
            ["id"] = jobId,
            ["job_info"] = new Dictionary<string, object> { ["name"] = name, ["project_id"] = projectId, ["project_full_path"] = "ml/x", ["pipeline_id"] = pipelineId },
            ["git_info"] = new Dictionary<string, object> { ["ref"] = gitRef, ["repo_url"] = repoUrl },
            ["runner_info"] = new Dictionary<string, object> { ["timeout"] = timeoutSeconds },
            ["image"] = image is null ? null : new Dictionary<string, object> { ["name"] = image },
            ["variables"] = variables.Select(pair => new Dictionary<string, object> { ["key"] = pair.Key, ["value"] = pair.Value, ["public"] = true }).ToArray(),
        });
        return JobPayloadReader.Parse(System.Text.Encoding.UTF8.GetBytes(json), "response.json");
    }

    public static JobIdentity Identity(long jobId, long projectId, IReadOnlyDictionary<string, string> variables, long pipelineId = 3, string gitRef = "main") =>
        JobIdentity.From(Payload(jobId, projectId, variables, pipelineId, gitRef));
}
