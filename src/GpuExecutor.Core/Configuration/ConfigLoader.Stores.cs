using System.Text.RegularExpressions;
using GpuExecutor.Outcomes;

namespace GpuExecutor.Configuration;

// The [stores.NAME] tables: where datasets and checkpoints live, and who may read what.
public static partial class ConfigLoader
{
    private static Dictionary<string, StoreSettings> ReadStores(TableReader stores)
    {
        var result = new Dictionary<string, StoreSettings>(StringComparer.Ordinal);
        foreach (var name in stores.Keys)
        {
            if (!StoreName().IsMatch(name))
                throw new ConfigurationException(stores.KeyPath(name), "a store name must be lowercase letters, digits and '-', starting with a letter (it is the scheme of dataset sources, as in s3://).");
            var table = stores.Table(name);
            var kindText = table.String("type") ?? throw new ConfigurationException(table.KeyPath("type"), "is required: \"s3\" or \"file\".");
            var kind = kindText switch
            {
                "s3" => StoreKind.S3,
                "file" => StoreKind.File,
                _ => throw new ConfigurationException(table.KeyPath("type"), $"'{kindText}' is not one of s3, file."),
            };

            var allow = table.StringList("allow");
            for (var index = 0; index < allow.Count; index++)
            {
                if (!AllowRule().IsMatch(allow[index]) || allow[index].Split('/').Any(segment => segment is "." or ".."))
                    throw new ConfigurationException($"{table.KeyPath("allow")}[{index}]", $"'{allow[index]}' is not \"bucket\" or \"bucket/prefix\".");
            }

            string? endpoint = null, root = null;
            Secret? accessKey = null, secretKey = null;
            if (kind == StoreKind.S3)
            {
                endpoint = table.String("endpoint");
                if (endpoint is not null && (!Uri.TryCreate(endpoint, UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https")))
                    throw new ConfigurationException(table.KeyPath("endpoint"), $"'{endpoint}' is not an http(s) URL.");
                accessKey = table.String("access_key_id") is { Length: > 0 } id ? new Secret(id) : null;
                secretKey = table.String("secret_access_key") is { Length: > 0 } secret ? new Secret(secret) : null;
                if ((accessKey is null) != (secretKey is null))
                    throw new ConfigurationException(table.KeyPath(accessKey is null ? "access_key_id" : "secret_access_key"), "access_key_id and secret_access_key go together; set both, or neither to use the environment's credentials.");
            }
            else
            {
                root = table.AbsolutePath("root", "/");
                if (root == "/")
                    throw new ConfigurationException(table.KeyPath("root"), "is required for a file store and must not be '/'.");
            }

            result[name] = new StoreSettings
            {
                Name = name,
                Kind = kind,
                Endpoint = endpoint,
                Region = kind == StoreKind.S3 ? table.String("region") ?? "us-east-1" : "us-east-1",
                PathStyle = kind == StoreKind.S3 && (table.Boolean("path_style") ?? false),
                AccessKeyId = accessKey,
                SecretAccessKey = secretKey,
                Root = root,
                Allow = allow,
                PassCredentialsToJob = kind == StoreKind.S3 && (table.Boolean("pass_credentials_to_job") ?? false),
            };
            table.RejectUnknownKeys();
        }
        stores.RejectUnknownKeys();
        return result;
    }

    [GeneratedRegex("^[a-z][a-z0-9-]{0,31}$")]
    private static partial Regex StoreName();

    // S3 bucket names (3-63 of [a-z0-9.-]), then an optional key prefix of printable characters.
    [GeneratedRegex(@"^[a-z0-9][a-z0-9.-]{1,62}(/[\x21-\x7e][\x20-\x7e]*)?$")]
    private static partial Regex AllowRule();
}
