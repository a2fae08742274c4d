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
}
