using System.Text;
using System.Text.Json;
using GpuExecutor.Outcomes;

namespace GpuExecutor.Protocol;

public static class JobPayloadReader
{
    /// <summary>
    /// Reads and checks the payload. Every problem is a system failure: the file is written by the
    /// runner, so a missing or malformed one means the runner or host is broken, not the job.
    /// </summary>
    public static JobPayload Read(IRunnerEnvironment environment)
    {
        var path = environment.Get(RunnerVariables.JobResponseFile);
        if (string.IsNullOrWhiteSpace(path))
            throw new SystemFailureException($"{RunnerVariables.JobResponseFile} is not set: gpu-executor must be started by GitLab Runner's custom executor (or `gpu-executor simulate`).");

        byte[] bytes;
        try
        {
            bytes = File.ReadAllBytes(path);
        }
        catch (Exception error) when (error is IOException or UnauthorizedAccessException)
        {
            throw new SystemFailureException($"{RunnerVariables.JobResponseFile} '{path}' cannot be read: {error.Message}", error);
        }

        return Parse(bytes, path);
    }

    public static JobPayload Parse(ReadOnlySpan<byte> json, string source)
    {
        JobPayload? payload;
        try
        {
            payload = JsonSerializer.Deserialize(json, ProtocolJsonContext.Default.JobPayload);
        }
        catch (JsonException error)
        {
            throw new SystemFailureException($"{RunnerVariables.JobResponseFile} '{source}' is not a valid job payload: {error.Message}", error);
        }

        if (payload is null)
            throw new SystemFailureException($"{RunnerVariables.JobResponseFile} '{source}' is not a valid job payload: it is JSON null.");
        // A field sent as JSON null would otherwise surface later as a NullReferenceException.
        payload.JobInfo ??= new JobInfo();
        payload.GitInfo ??= new GitInfo();
        payload.RunnerInfo ??= new RunnerInfo();
        payload.Variables ??= [];
        payload.Steps ??= [];
        if (payload.Id <= 0)
            throw new SystemFailureException($"{RunnerVariables.JobResponseFile} '{source}' is not a valid job payload: 'id' is missing or not a positive number.");
        return payload;
    }

    /// <summary>
    /// Only the job's id and project, read with a bare JSON reader: for the admin log line of a
    /// verb that does not read the job (`config`), where deserialising the whole payload cost
    /// milliseconds of a verb the runner calls for every job. Null when there is none to read.
    /// </summary>
    public static (long JobId, long? ProjectId, string? ProjectPath)? TryReadIdentity(IRunnerEnvironment environment)
    {
        var path = environment.Get(RunnerVariables.JobResponseFile);
        if (string.IsNullOrWhiteSpace(path))
            return null;
        try
        {
            var reader = new Utf8JsonReader(File.ReadAllBytes(path));
            long? jobId = null;
            long? projectId = null;
            string? projectPath = null;
            var inJobInfo = false;
            while (reader.Read())
            {
                if (reader.TokenType == JsonTokenType.EndObject && reader.CurrentDepth == 1)
                    inJobInfo = false;
                if (reader.TokenType != JsonTokenType.PropertyName)
                    continue;
                var depth = reader.CurrentDepth;
                if (depth == 1 && reader.ValueTextEquals("job_info"u8))
                {
                    inJobInfo = true;
                    continue;
                }
                var name = reader.GetString();
                if (!reader.Read())
                    break;
                if (depth == 1 && name == "id" && reader.TokenType == JsonTokenType.Number)
                    jobId = reader.GetInt64();
                else if (inJobInfo && depth == 2 && name == "project_id" && reader.TokenType == JsonTokenType.Number)
                    projectId = reader.GetInt64();
                else if (inJobInfo && depth == 2 && name == "project_full_path" && reader.TokenType == JsonTokenType.String)
                    projectPath = reader.GetString();
                else if (reader.TokenType is JsonTokenType.StartObject or JsonTokenType.StartArray)
                    reader.Skip();
            }
            return jobId is > 0 ? (jobId.Value, projectId, projectPath) : null;
        }
        catch (Exception error) when (error is IOException or UnauthorizedAccessException or JsonException or InvalidOperationException or FormatException)
        {
            return null;
        }
    }
}
