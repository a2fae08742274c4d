using GpuExecutor.Outcomes;
using GpuExecutor.Protocol;
using GpuExecutor.Workflows;

namespace GpuExecutor.Verbs;

/// <summary>`run SCRIPT STAGE`: reads the runner's script (a file on the host) and hands it to <see cref="RunStage"/>.</summary>
public static class RunVerb
{
    public static async Task RunAsync(VerbContext context, string scriptPath, string stageName)
    {
        context.Facts.Stage = stageName;
        var payload = JobPayloadReader.Read(context.Environment);
        context.Facts.Payload = payload;
        byte[] script;
        try
        {
            // The runner writes the script on the host (mode 0700) and it is small: read it whole.
            script = await File.ReadAllBytesAsync(scriptPath, context.Stop);
        }
        catch (Exception error) when (error is IOException or UnauthorizedAccessException)
        {
            throw new SystemFailureException($"the stage script '{scriptPath}' cannot be read: {error.Message}", error);
        }

        // Raw, unbuffered standard streams: output reaches the job log as it is produced, and
        // memory stays flat however long the stage prints.
        await using var stdout = Console.OpenStandardOutput();
        await using var stderr = Console.OpenStandardError();
        var workflow = new RunStage(context.Config, context.Adapters.Containers, context.Adapters.Stores, context.Log, context.Adapters.AgentLauncher);
        await workflow.RunAsync(payload, script, stageName, stdout, stderr, context.Stop, context.Environment.GetJobVariable("CI_PROJECT_DIR"));
    }
}
