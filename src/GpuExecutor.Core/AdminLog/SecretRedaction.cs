using GpuExecutor.Configuration;
using GpuExecutor.Protocol;

namespace GpuExecutor.AdminLog;

/// <summary>
/// Takes every secret this call could know out of a text bound for the admin log: the config's
/// store keys and GitLab token, the job's masked variables and its MLflow token. Messages are
/// written not to carry secrets; this is the second line, for what an SDK or a server echoed.
/// </summary>
public sealed class SecretRedaction
{
    public const string Mask = "[MASKED]";

    /// <summary>Shorter values are not masked: "1" or "on" would blank out half a message, and GitLab refuses to mask fewer than 8 characters anyway.</summary>
    private const int ShortestSecret = 4;

    private readonly string[] _secrets;

    private SecretRedaction(IEnumerable<string> secrets) =>
        _secrets = secrets.Where(secret => secret.Length >= ShortestSecret).Distinct(StringComparer.Ordinal).OrderByDescending(secret => secret.Length).ToArray();

    public static SecretRedaction For(ExecutorConfig? config, JobPayload? payload)
    {
        var secrets = new List<string>();
        if (config is not null)
        {
            foreach (var store in config.Stores.Values)
                secrets.AddRange(new[] { store.AccessKeyId?.Value, store.SecretAccessKey?.Value }.OfType<string>());
            if (config.Continuation.Token is { } token)
                secrets.Add(token.Value);
        }
        if (payload is not null)
        {
            if (payload.Token is { } jobToken)
                secrets.Add(jobToken);
            foreach (var variable in payload.Variables)
            {
                if (variable.Masked || (config is not null && variable.Key == config.Mlflow.TokenVariable))
                    secrets.Add(variable.Value);
            }
        }
        return new SecretRedaction(secrets);
    }

    public string? Redact(string? text)
    {
        if (text is null)
            return null;
        foreach (var secret in _secrets)
            text = text.Replace(secret, Mask, StringComparison.Ordinal);
        return text;
    }
}
